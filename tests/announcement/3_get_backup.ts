import { assert } from "jsr:@std/assert/assert";

const orgToken = "your-organization-token";
// Database backup ID you got from the previous step
const databaseBackupId = "database-backup-id";

const res = await fetch(
  `https://api.deno.com/v1/database_backups/${databaseBackupId}`,
  {
    headers: {
      authorization: `Bearer ${orgToken}`,
    },
  },
);

assert(res.ok);

console.log(await res.json());
// You would see something like:
// {
//   id: "database-id",
//   kind: "s3",
//   endpoint: "https://storage.googleapis.com",
//   bucketName: "test-kv-backup",
//   bucketRegion: "us-central1",
//   accessKeyId: "YOUR_ACCESS_KEY_ID",
//   prefix: "backup/",
//   status: {
//     code: "active"
//   }
// }
