//! The kernel message envelope over a WebSocket, as Jupyter Server and the kernel gateways
//! carry it (jupyter_server, "kernel websocket protocols"): the default JSON protocol (one
//! text message: the four parts as JSON fields, plus `channel` and `buffers`) and
//! `v1.kernel.websocket.jupyter.org` (one binary message: an offset table, then the channel
//! name and the four parts). Both frame the same four parts that `Message::from_parts` and
//! `Message::parts` decode and encode for every transport; the channel names are
//! `Channel::from_ws_name`'s one table. The socket itself lives with the gateway backend.

use crate::error::WireError;
use crate::wire::{Channel, Message};

/// Decodes one JSON WebSocket message (jupyter_server's default kernel protocol).
pub fn decode_json(bytes: &[u8]) -> Result<(Channel, Message), WireError> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Ws<'a> {
        #[serde(borrow)]
        header: &'a RawValue,
        #[serde(borrow, default)]
        parent_header: Option<&'a RawValue>,
        #[serde(borrow, default)]
        metadata: Option<&'a RawValue>,
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
        #[serde(default)]
        channel: String,
    }
    let m: Ws = serde_json::from_slice(bytes).map_err(|source| WireError::Json {
        part: "websocket message",
        source,
    })?;
    let channel = Channel::from_ws_name(m.channel.as_bytes()).ok_or_else(|| {
        WireError::Framing(format!(
            "JSON WebSocket message: unknown channel {:?}",
            crate::text::sanitize(&m.channel.chars().take(40).collect::<String>())
        ))
    })?;
    // A missing part is an empty one (`null` parent_header and content included).
    fn part(p: Option<&RawValue>) -> &[u8] {
        match p.map(RawValue::get) {
            None | Some("null") => b"{}",
            Some(json) => json.as_bytes(),
        }
    }
    let message = Message::from_parts(
        Vec::new(),
        [
            m.header.get().as_bytes(),
            part(m.parent_header),
            part(m.metadata),
            part(m.content),
        ],
        Vec::new(),
    )?;
    Ok((channel, message))
}

/// Decodes one v1 binary WebSocket message. Every offset is checked against the message's
/// length and order; buffers (parts after the content) are dropped, as in the JSON protocol.
pub fn decode_v1(bytes: &[u8]) -> Result<(Channel, Message), WireError> {
    let bad = |why: &str| WireError::Framing(format!("v1 WebSocket message: {why}"));
    let word = |i: usize| -> Option<u64> {
        let b = bytes.get(i.checked_mul(8)?..i.checked_mul(8)?.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let n = word(0).ok_or_else(|| bad("shorter than its offset count"))?;
    // Channel, four JSON parts and the end offset at least; a sane bound on buffers.
    if !(6..=1024).contains(&n) {
        return Err(bad("offset count out of range"));
    }
    let n = n as usize;
    let mut offsets = Vec::with_capacity(n);
    for i in 1..=n {
        let o = word(i).ok_or_else(|| bad("offset table cut short"))?;
        let o = usize::try_from(o).map_err(|_| bad("offset too large"))?;
        if o > bytes.len() || offsets.last().is_some_and(|prev| o < *prev) {
            return Err(bad("offset outside the message or out of order"));
        }
        offsets.push(o);
    }
    let part = |i: usize| -> Result<&[u8], WireError> {
        let (a, b) = (offsets.get(i), offsets.get(i + 1));
        match (a, b) {
            (Some(&a), Some(&b)) => bytes
                .get(a..b)
                .ok_or_else(|| bad("part outside the message")),
            _ => Err(bad("missing part")),
        }
    };
    let channel = Channel::from_ws_name(part(0)?).ok_or_else(|| bad("unknown channel"))?;
    let message = Message::from_parts(
        Vec::new(),
        [part(1)?, part(2)?, part(3)?, part(4)?],
        Vec::new(),
    )?;
    Ok((channel, message))
}

/// Encodes a message in the v1 binary framing (no buffers).
pub fn encode_v1(channel: Channel, m: &Message) -> Result<Vec<u8>, WireError> {
    let [header, parent, metadata, content] = m.parts()?;
    let parts: [&[u8]; 5] = [
        channel.name().as_bytes(),
        &header,
        &parent,
        &metadata,
        &content,
    ];
    // Offsets: the start of each part, then the end; the table itself comes first.
    let count = parts.len() + 1;
    let mut offset = 8 * (1 + count);
    let mut out = Vec::with_capacity(offset + parts.iter().map(|p| p.len()).sum::<usize>());
    out.extend_from_slice(&(count as u64).to_le_bytes());
    for p in &parts {
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += p.len();
    }
    out.extend_from_slice(&(offset as u64).to_le_bytes());
    for p in &parts {
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// Encodes a message for the JSON WebSocket protocol: the four parts (each already JSON) as
/// the fields of one object.
pub fn encode_json(channel: Channel, m: &Message) -> Result<String, WireError> {
    let [header, parent, metadata, content] = m.parts()?;
    let mut out =
        Vec::with_capacity(header.len() + parent.len() + metadata.len() + content.len() + 96);
    for (key, part) in [
        ("{\"header\":", &header),
        (",\"parent_header\":", &parent),
        (",\"metadata\":", &metadata),
        (",\"content\":", &content),
    ] {
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(part);
    }
    // Channel names are the fixed table's ASCII words: nothing to escape.
    out.extend_from_slice(
        format!(",\"channel\":\"{}\",\"buffers\":[]}}", channel.name()).as_bytes(),
    );
    String::from_utf8(out).map_err(|e| WireError::Framing(format!("message is not UTF-8: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::Content;
    use serde_json::{json, Value};

    #[test]
    fn websocket_messages_round_trip() {
        let m = Message::request("s", Content::KernelInfoRequest);
        let text = encode_json(Channel::Shell, &m).unwrap();
        let (ch, back) = decode_json(text.as_bytes()).unwrap();
        assert_eq!(ch, Channel::Shell);
        assert_eq!(back, m);
        assert!(decode_json(b"{\"header\": 5}").is_err());
        assert!(decode_json(b"[]").is_err());
    }

    #[test]
    fn both_protocols_refuse_an_unknown_channel_alike() {
        let m = Message::request("s", Content::KernelInfoRequest);
        for (name, want) in [
            ("shell", Some(Channel::Shell)),
            ("iopub", Some(Channel::IoPub)),
            ("control", Some(Channel::Control)),
            ("stdin", Some(Channel::Stdin)),
            ("hb", None),
            ("", None),
            ("IOPUB", None),
        ] {
            let mut v: Value =
                serde_json::from_str(&encode_json(Channel::Shell, &m).unwrap()).unwrap();
            v["channel"] = json!(name);
            let json_got = decode_json(v.to_string().as_bytes()).ok().map(|(c, _)| c);
            let mut bin = encode_v1(Channel::Shell, &m).unwrap();
            // Rebuild the v1 message with `name` as its channel part.
            let start = u64::from_le_bytes(bin[8..16].try_into().unwrap()) as usize;
            let end = u64::from_le_bytes(bin[16..24].try_into().unwrap()) as usize;
            let delta = name.len() as i64 - (end - start) as i64;
            bin.splice(start..end, name.bytes());
            for i in 2..=6 {
                let at = i * 8;
                let o = u64::from_le_bytes(bin[at..at + 8].try_into().unwrap()) as i64 + delta;
                bin[at..at + 8].copy_from_slice(&(o as u64).to_le_bytes());
            }
            let v1_got = decode_v1(&bin).ok().map(|(c, _)| c);
            assert_eq!(json_got, want, "json {name:?}");
            assert_eq!(v1_got, want, "v1 {name:?}");
        }
    }

    #[test]
    fn v1_messages_round_trip_and_bad_offsets_are_refused() {
        let m = Message::request("s", Content::KernelInfoRequest);
        let bin = encode_v1(Channel::Control, &m).unwrap();
        let (ch, back) = decode_v1(&bin).unwrap();
        assert_eq!(ch, Channel::Control);
        assert_eq!(back, m);
        // The layout jupyter_server reads: count 6, first offset right after the table.
        assert_eq!(u64::from_le_bytes(bin[..8].try_into().unwrap()), 6);
        assert_eq!(u64::from_le_bytes(bin[8..16].try_into().unwrap()), 56);
        assert_eq!(&bin[56..63], b"control");
        // Truncated, out-of-range and out-of-order offsets, huge counts: errors, no panic.
        for cut in [0, 7, 8, 40, 60, bin.len() - 1] {
            assert!(decode_v1(&bin[..cut]).is_err(), "cut {cut}");
        }
        let mut huge = bin.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_v1(&huge).is_err());
        let mut swapped = bin.clone();
        swapped[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_v1(&swapped).is_err());
        let mut backwards = bin.clone();
        backwards[24..32].copy_from_slice(&1u64.to_le_bytes());
        assert!(decode_v1(&backwards).is_err());
    }
}
