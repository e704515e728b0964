import { assert } from "jsr:@std/assert/assert";

const orgToken = "your-organization-token";
const databaseId = "database-id";

const res = await fetch(
  `https://api.deno.com/v1/databases/${databaseId}/database_backups`,
  {
    headers: {
      authorization: `Bearer ${orgToken}`,
    },
  },
);

assert(res.ok);

console.log(await res.json());
// You would see something like:
// [
//   {
//     id: "database-id",
//     kind: "s3",
//     endpoint: "https://storage.googleapis.com",
//     bucketName: "test-kv-backup",
//     bucketRegion: "us-central1",
//     accessKeyId: "YOUR_ACCESS_KEY_ID",
//     prefix: "backup/",
//     status: {
//       code: "active"
//     }
//   }
// ]
