//! MCP resources: the local workspace's files as `file://` resources (listed recursively, read
//! up to 10 MiB as text or a base64 blob).

use base64::Engine;
use rmcp::model::{
    ListResourcesResult, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
};
use rmcp::ErrorData;

use crate::error::{SessionError, WorkspaceError};
use crate::session::Session;

/// Largest file served as a resource.
const RESOURCE_MAX_BYTES: u64 = 10 * 1024 * 1024;

fn mime_for(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or("");
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "csv" => "text/csv",
        "json" => "application/json",
        "md" => "text/markdown",
        "py" => "text/x-python",
        "html" | "htm" => "text/html",
        "txt" | "log" | "tsv" | "yaml" | "yml" | "toml" | "ini" | "sql" => "text/plain",
        _ => "application/octet-stream",
    }
}

fn internal(e: SessionError) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

/// Every file in the workspace, as a resource.
pub(super) async fn list(session: &Session) -> Result<ListResourcesResult, ErrorData> {
    let (listing, root) = session
        .files()
        .local(move |ws| {
            let root = ws.path(".")?;
            ws.list(&root, true, None)
                .map(|l| (l, ws.root().to_path_buf()))
        })
        .await
        .map_err(internal)?;
    let resources = listing
        .entries
        .into_iter()
        .filter(|e| e.kind == crate::workspace::EntryKind::File)
        .map(|e| {
            let uri = crate::workspace::file_uri(&root.join(&e.path));
            Resource::new(uri, e.path.clone())
                .with_mime_type(mime_for(&e.path))
                .with_size(e.size)
        })
        .collect();
    Ok(ListResourcesResult::with_all_items(resources))
}

/// One workspace file by its `file://` URI: text when it is UTF-8 (and not an image), else a
/// base64 blob.
pub(super) async fn read(
    session: &Session,
    uri: String,
) -> Result<ReadResourceResponse, ErrorData> {
    let Some(path) = crate::workspace::path_of_file_uri(&uri) else {
        return Err(ErrorData::invalid_params(
            format!("{uri}: only file:// URIs of workspace files are served"),
            None,
        ));
    };
    let path = path.to_string_lossy().into_owned();
    let r = session
        .files()
        .local(move |ws| {
            let p = ws.path(&path)?;
            ws.read_bytes(&p, RESOURCE_MAX_BYTES)
                .map(|b| (b, p.display()))
        })
        .await;
    let (bytes, rel) = match r {
        Ok(x) => x,
        Err(SessionError::Workspace(WorkspaceError::NotFound { path })) => {
            return Err(ErrorData::resource_not_found(
                format!("{path}: not found in the workspace"),
                Some(serde_json::json!({ "uri": uri })),
            ))
        }
        Err(SessionError::Workspace(e)) => {
            return Err(ErrorData::invalid_params(e.to_string(), None))
        }
        Err(e) => return Err(internal(e)),
    };
    let mime = mime_for(&rel);
    let blob = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let contents = match String::from_utf8(bytes) {
        Ok(text) if !mime.starts_with("image/") && !text.contains('\0') => {
            ResourceContents::TextResourceContents {
                uri,
                mime_type: Some(
                    if mime == "application/octet-stream" {
                        "text/plain"
                    } else {
                        mime
                    }
                    .into(),
                ),
                text,
                meta: None,
            }
        }
        Ok(text) => ResourceContents::BlobResourceContents {
            uri,
            mime_type: Some(mime.into()),
            blob: blob(text.into_bytes()),
            meta: None,
        },
        Err(e) => ResourceContents::BlobResourceContents {
            uri,
            mime_type: Some(mime.into()),
            blob: blob(e.into_bytes()),
            meta: None,
        },
    };
    Ok(ReadResourceResult::new(vec![contents]).into())
}
