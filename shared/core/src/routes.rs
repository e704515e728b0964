//! The route table: every production route, declared once.
//!
//! Each route is served by its own Lambda function (a crate under `functions/`
//! with the same name). `shared/api/tests/route_agreement.rs` checks this table
//! against the `cargo lambda watch` router in the workspace `Cargo.toml`, the SAM
//! template in `infra/template.yaml` and the OpenAPI document in `docs/openapi.yaml`.

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only the operator's admin token.
    Admin,
    /// The admin token, or a token of the organization named in the path.
    AdminOrOrganization,
    /// A token of the organization that owns the resource.
    Organization,
    /// KV Connect metadata exchange: an organization token that owns the database;
    /// errors are plain text (data plane).
    KvConnect,
    /// KV Connect data path: a data-path token of the metadata exchange.
    KvData,
    /// KV Connect data path, with a streamed response (Lambda response streaming):
    /// `watch`, and `snapshot_read`, whose answers can pass a buffered response's
    /// 6 MB.
    KvStream,
}

impl Access {
    /// Management routes are in docs/openapi.yaml; data-plane routes speak KV Connect.
    pub fn is_management(self) -> bool {
        matches!(
            self,
            Self::Admin | Self::AdminOrOrganization | Self::Organization
        )
    }
}

/// One production route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The Lambda function (and crate) that serves it.
    pub function: &'static str,
    /// Upper-case HTTP method.
    pub method: &'static str,
    /// Path pattern with `{name}` parameters, as API Gateway and the watch router write it.
    pub path: &'static str,
    pub access: Access,
}

macro_rules! routes {
    ($($name:ident = $function:literal, $method:literal, $path:literal, $access:ident;)*) => {
        $(pub const $name: Route = Route {
            function: $function,
            method: $method,
            path: $path,
            access: Access::$access,
        };)*
        /// Every route, in the order the docs list them.
        pub const ALL: &[Route] = &[$($name),*];
    };
}

routes! {
    CREATE_ORGANIZATION = "create-organization", "POST", "/v1/organizations", Admin;
    LIST_ORGANIZATIONS = "list-organizations", "GET", "/v1/organizations", Admin;
    GET_ORGANIZATION = "get-organization", "GET", "/v1/organizations/{organizationId}", Admin;
    UPDATE_ORGANIZATION = "update-organization", "PATCH", "/v1/organizations/{organizationId}", Admin;
    DELETE_ORGANIZATION = "delete-organization", "DELETE", "/v1/organizations/{organizationId}", Admin;
    CREATE_TOKEN = "create-token", "POST", "/v1/organizations/{organizationId}/tokens", AdminOrOrganization;
    LIST_TOKENS = "list-tokens", "GET", "/v1/organizations/{organizationId}/tokens", AdminOrOrganization;
    GET_ORGANIZATION_USAGE = "get-organization-usage", "GET", "/v1/organizations/{organizationId}/usage", AdminOrOrganization;
    REVOKE_TOKEN = "revoke-token", "DELETE", "/v1/organizations/{organizationId}/tokens/{tokenId}", AdminOrOrganization;
    CREATE_DATABASE = "create-database", "POST", "/v1/organizations/{organizationId}/databases", Organization;
    LIST_DATABASES = "list-databases", "GET", "/v1/organizations/{organizationId}/databases", Organization;
    GET_DATABASE = "get-database", "GET", "/v1/databases/{databaseId}", Organization;
    UPDATE_DATABASE = "update-database", "PATCH", "/v1/databases/{databaseId}", Organization;
    DELETE_DATABASE = "delete-database", "DELETE", "/v1/databases/{databaseId}", Organization;
    GET_DATABASE_USAGE = "get-database-usage", "GET", "/v1/databases/{databaseId}/usage", Organization;
    ENABLE_BACKUP = "enable-backup", "POST", "/v1/databases/{databaseId}/database_backups", Organization;
    LIST_BACKUPS = "list-backups", "GET", "/v1/databases/{databaseId}/database_backups", Organization;
    GET_BACKUP = "get-backup", "GET", "/v1/database_backups/{databaseBackupId}", Organization;
    DELETE_BACKUP = "delete-backup", "DELETE", "/v1/database_backups/{databaseBackupId}", Organization;
    RETRY_BACKUP = "retry-backup", "POST", "/v1/database_backups/{databaseBackupId}/retry", Organization;
    LIST_RESTORE_POINTS = "list-restore-points", "GET", "/v1/database_backups/{databaseBackupId}/restore_points", Organization;
    KV_CONNECT = "kv-connect", "POST", "/databases/{databaseId}/connect", KvConnect;
    KV_SNAPSHOT_READ = "kv-snapshot-read", "POST", "/databases/{databaseId}/snapshot_read", KvStream;
    KV_ATOMIC_WRITE = "kv-atomic-write", "POST", "/databases/{databaseId}/atomic_write", KvData;
    KV_WATCH = "kv-watch", "POST", "/databases/{databaseId}/watch", KvStream;
}

/// Functions that serve no route (scheduled or event-driven).
pub const BACKGROUND_FUNCTIONS: &[&str] = &[
    "kv-sweep-expired",
    "kv-purge-deleted",
    "backup-forward",
    "restore-database",
    "kv-storage-usage",
];

impl Route {
    /// Names of the `{parameters}` in the path, in order.
    pub fn parameters(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// Matches a concrete request path against this route's pattern and returns the
    /// parameters. The request path may carry a prefix (an API Gateway stage or a
    /// custom domain's base path): the pattern is matched against its last segments.
    pub fn match_path<'a>(&self, path: &'a str) -> Option<Vec<(&'static str, &'a str)>> {
        let pattern: Vec<&'static str> = self.path.trim_matches('/').split('/').collect();
        let actual: Vec<&'a str> = path.trim_end_matches('/').split('/').collect();
        if actual.len() < pattern.len() {
            return None;
        }
        let tail = &actual[actual.len() - pattern.len()..];
        let mut params = Vec::new();
        for (want, got) in pattern.iter().zip(tail) {
            match want.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !got.is_empty() => params.push((name, *got)),
                Some(_) => return None,
                None if want == got => {}
                None => return None,
            }
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_name_is_unique_and_every_route_is_unique() {
        let mut functions: Vec<_> = ALL.iter().map(|r| r.function).collect();
        functions.sort_unstable();
        functions.dedup();
        assert_eq!(functions.len(), ALL.len());
        let mut keys: Vec<_> = ALL.iter().map(|r| (r.method, r.path)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ALL.len());
    }

    #[test]
    fn match_path_extracts_parameters() {
        let params = REVOKE_TOKEN
            .match_path("/v1/organizations/abc/tokens/def")
            .expect("matches");
        assert_eq!(params, vec![("organizationId", "abc"), ("tokenId", "def")]);
        assert_eq!(
            GET_DATABASE.match_path("/prod/v1/databases/x/"),
            Some(vec![("databaseId", "x")])
        );
        assert_eq!(GET_DATABASE.match_path("/v1/databases"), None);
        assert_eq!(GET_DATABASE.match_path("/v1/databases/"), None);
        assert_eq!(GET_DATABASE.match_path("/v1/organizations/x"), None);
        assert_eq!(
            LIST_BACKUPS.parameters().collect::<Vec<_>>(),
            vec!["databaseId"]
        );
    }
}
