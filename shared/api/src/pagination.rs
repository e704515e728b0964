//! `page`/`limit`/`q`/`sort`/`order` of list routes, and the RFC 8288 `Link` header.

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
pub const MAX_QUERY_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A parsed list query. `sort` can only be `created_at`, so it needs no field;
/// whether it was given is kept so the links repeat what the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page: u32,
    pub limit: u32,
    pub q: Option<String>,
    pub sort_given: bool,
    pub order: Option<Order>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            page: 1,
            limit: DEFAULT_LIMIT,
            q: None,
            sort_given: false,
            order: None,
        }
    }
}

impl ListQuery {
    pub fn order(&self) -> Order {
        self.order.unwrap_or(Order::Asc)
    }

    /// Parses query pairs. Unknown parameters are ignored; a known one given twice,
    /// or out of range, is a 400.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> ApiResult<Self> {
        let mut out = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if ["page", "limit", "q", "sort", "order"].contains(&key) {
                if seen.contains(&key) {
                    return Err(invalid(format!(
                        "query parameter {key} is given more than once"
                    )));
                }
                seen.push(key);
            }
            match key {
                "page" => {
                    out.page = match value.parse::<u32>() {
                        Ok(n) if n >= 1 => n,
                        _ => {
                            return Err(invalid(format!(
                                "page must be an integer of at least 1, got {value:?}"
                            )))
                        }
                    }
                }
                "limit" => {
                    out.limit = match value.parse::<u32>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => {
                            return Err(invalid(format!(
                                "limit must be an integer from 1 to {MAX_LIMIT}, got {value:?}"
                            )))
                        }
                    }
                }
                "q" => {
                    if value.chars().count() > MAX_QUERY_CHARS {
                        return Err(invalid(format!(
                            "q must be at most {MAX_QUERY_CHARS} characters"
                        )));
                    }
                    out.q = Some(value.to_string()).filter(|q| !q.is_empty());
                }
                "sort" => {
                    if value != "created_at" {
                        return Err(invalid(format!("sort must be created_at, got {value:?}")));
                    }
                    out.sort_given = true;
                }
                "order" => {
                    out.order = Some(match value {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => {
                            return Err(invalid(format!(
                                "order must be asc or desc, got {value:?}"
                            )))
                        }
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidQuery(message)
}

/// Where a page sits among all pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    pub page: u32,
    /// Number of the last page; 1 when there are no items.
    pub last: u32,
    pub total: usize,
}

/// Cuts one page out of the whole (already filtered and sorted) list.
pub fn paginate<T>(items: Vec<T>, query: &ListQuery) -> (Vec<T>, PageInfo) {
    let total = items.len();
    let limit = query.limit as usize;
    let last = total.div_ceil(limit).max(1);
    let start = (query.page as usize - 1).saturating_mul(limit);
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let info = PageInfo {
        page: query.page,
        last: u32::try_from(last).unwrap_or(u32::MAX),
        total,
    };
    (page, info)
}

/// The RFC 8288 `Link` header value: `first` and `last` always, `prev` past the
/// first page, `next` before the last. Each link repeats the client's other
/// parameters.
pub fn link_header(base_url: &str, query: &ListQuery, info: &PageInfo) -> String {
    let link = |page: u32, rel: &str| {
        let mut params = url::form_urlencoded::Serializer::new(String::new());
        params.append_pair("page", &page.to_string());
        params.append_pair("limit", &query.limit.to_string());
        if let Some(q) = &query.q {
            params.append_pair("q", q);
        }
        if query.sort_given {
            params.append_pair("sort", "created_at");
        }
        match query.order {
            Some(Order::Asc) => {
                params.append_pair("order", "asc");
            }
            Some(Order::Desc) => {
                params.append_pair("order", "desc");
            }
            None => {}
        }
        format!("<{base_url}?{}>; rel=\"{rel}\"", params.finish())
    };
    let mut links = vec![link(1, "first")];
    if info.page > 1 {
        links.push(link((info.page - 1).min(info.last), "prev"));
    }
    if info.page < info.last {
        links.push(link(info.page + 1, "next"));
    }
    links.push(link(info.last, "last"));
    links.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> ApiResult<ListQuery> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        ListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn defaults_and_valid_values() {
        assert_eq!(parse("").unwrap(), ListQuery::default());
        let q = parse("page=3&limit=100&q=abc&sort=created_at&order=desc&other=x").unwrap();
        assert_eq!(q.page, 3);
        assert_eq!(q.limit, 100);
        assert_eq!(q.q.as_deref(), Some("abc"));
        assert!(q.sort_given);
        assert_eq!(q.order(), Order::Desc);
    }

    #[test]
    fn invalid_values_are_400s() {
        for bad in [
            "page=0",
            "page=-1",
            "page=abc",
            "page=1.5",
            "limit=0",
            "limit=101",
            "limit=",
            "sort=name",
            "order=up",
            "page=1&page=2",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.code(), "invalidQueryParameter", "{bad}");
        }
        assert!(parse(&format!("q={}", "x".repeat(201))).is_err());
    }

    #[test]
    fn pages_and_last_page() {
        let q = ListQuery {
            page: 2,
            limit: 2,
            ..Default::default()
        };
        let (items, info) = paginate((1..=5).collect(), &q);
        assert_eq!(items, vec![3, 4]);
        assert_eq!(
            info,
            PageInfo {
                page: 2,
                last: 3,
                total: 5
            }
        );
        let (items, info) = paginate(Vec::<u8>::new(), &ListQuery::default());
        assert!(items.is_empty());
        assert_eq!(info.last, 1);
        let q = ListQuery {
            page: 9,
            limit: 2,
            ..Default::default()
        };
        let (items, info) = paginate((1..=5).collect::<Vec<_>>(), &q);
        assert!(items.is_empty());
        assert_eq!(info.last, 3);
    }

    #[test]
    fn link_header_has_the_right_relations() {
        let base = "http://h/v1/organizations/o/databases";
        let q = ListQuery {
            page: 2,
            limit: 2,
            q: Some("a b".into()),
            order: Some(Order::Desc),
            ..Default::default()
        };
        let (_, info) = paginate((1..=5).collect::<Vec<_>>(), &q);
        assert_eq!(
            link_header(base, &q, &info),
            "<http://h/v1/organizations/o/databases?page=1&limit=2&q=a+b&order=desc>; rel=\"first\", \
             <http://h/v1/organizations/o/databases?page=1&limit=2&q=a+b&order=desc>; rel=\"prev\", \
             <http://h/v1/organizations/o/databases?page=3&limit=2&q=a+b&order=desc>; rel=\"next\", \
             <http://h/v1/organizations/o/databases?page=3&limit=2&q=a+b&order=desc>; rel=\"last\""
        );
        let first = ListQuery::default();
        let (_, info) = paginate(vec![1], &first);
        assert_eq!(
            link_header(base, &first, &info),
            format!(
                "<{base}?page=1&limit=20>; rel=\"first\", <{base}?page=1&limit=20>; rel=\"last\""
            )
        );
        // Past the end: prev points at the last real page.
        let beyond = ListQuery {
            page: 7,
            limit: 2,
            ..Default::default()
        };
        let (_, info) = paginate((1..=5).collect::<Vec<_>>(), &beyond);
        let header = link_header(base, &beyond, &info);
        assert!(
            header.contains(&format!("<{base}?page=3&limit=2>; rel=\"prev\"")),
            "{header}"
        );
        assert!(!header.contains("rel=\"next\""));
    }
}
