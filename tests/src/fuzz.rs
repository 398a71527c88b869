//! The logic of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), as plain
//! functions so that `tests/tests/e2e/fuzz_corpus.rs` replays the committed
//! corpus (`fuzz/corpus/<target>/`) through the same code on every
//! `cargo test`. Each function takes arbitrary bytes, must not panic on any
//! of them, and asserts the invariants its input allows.
//!
//! - [`frame_decoder`]: the length-prefixed [`FrameDecoder`] over a byte
//!   stream, as the router reads `ClientFrame`s and the client reads
//!   `ServerFrame`s;
//! - [`token`]: [`TokenVerifier::verify`] on the bytes as a token, on the
//!   token of a Hello decoded from them, and on a token signed with the right
//!   secret over header and claims taken from them (so the claims checks
//!   behind the signature are reached too);
//! - [`config`]: [`Config::load_str`] (TOML, then validation) on the bytes
//!   as text.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::frame::{encode, encode_deliver, DecodeError, FrameDecoder};
use switchboard_proto::ident::is_valid_id;
use switchboard_proto::v1::{client_frame, server_frame, ClientFrame, ServerFrame};
use switchboard_router::auth::{AuthError, TokenVerifier};
use switchboard_router::config::{Config, FlagOverrides};

/// The router's default `limits.max_frame_bytes`.
const CLIENT_FRAME_CAP: usize = 65_536 + 1_024;

/// The client's cap on a server frame (`switchboard_client`'s
/// `MAX_SERVER_FRAME`).
const SERVER_FRAME_CAP: usize = 16 * 1024 * 1024;

/// The router's cap on the first frame, before authentication
/// (`MAX_HELLO_FRAME_BYTES` in `router/src/server/handshake.rs`).
const HELLO_FRAME_CAP: usize = 8 * 1024;

/// Everything a decoder yields from one stream: the frames, then how it
/// stopped (`None`: it needs more bytes) and how many bytes of the stream it
/// left undecoded (held, or not yet fed when it failed).
#[derive(Debug, PartialEq)]
struct Decoded<M> {
    frames: Vec<M>,
    error: Option<DecodeError>,
    undecoded: usize,
}

/// Decodes `data` fed in pieces of the sizes `chunks` cycles through (one
/// piece of everything when `chunks` is empty), draining the decoder after
/// each piece as a session does.
fn decode_stream<M: prost::Message + Default>(
    data: &[u8],
    cap: usize,
    chunks: &[usize],
) -> Decoded<M> {
    let mut decoder = FrameDecoder::new(cap);
    let mut frames = Vec::new();
    let mut rest = data;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        let take = sizes.next().unwrap_or(rest.len()).min(rest.len());
        decoder.extend(&rest[..take]);
        rest = &rest[take..];
        loop {
            let ready = decoder.has_frame();
            match decoder.decode::<M>() {
                Ok(Some(frame)) => {
                    assert!(ready, "has_frame said no, decode gave a frame");
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(!ready, "has_frame said yes, decode needs more bytes");
                    break;
                }
                Err(error) => {
                    assert!(ready, "has_frame said no, decode gave an error");
                    return Decoded {
                        frames,
                        error: Some(error),
                        undecoded: decoder.buffered() + rest.len(),
                    };
                }
            }
        }
        if rest.is_empty() {
            return Decoded {
                frames,
                error: None,
                undecoded: decoder.buffered(),
            };
        }
    }
}

/// A decoded frame encodes to a frame that decodes to it again, and that
/// encoding is canonical (encoding what it decodes to gives the same bytes).
fn assert_round_trips<M>(frame: &M) -> Bytes
where
    M: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    let bytes = encode(frame);
    assert_eq!(bytes.len(), 4 + frame.encoded_len(), "length prefix");
    let mut decoder = FrameDecoder::new(bytes.len());
    decoder.extend(&bytes);
    let again = decoder
        .decode::<M>()
        .expect("a re-encoded frame decodes")
        .expect("a re-encoded frame is complete");
    assert_eq!(again, *frame, "decode(encode(frame)) != frame");
    assert_eq!(decoder.buffered(), 0, "one frame, nothing left over");
    assert_eq!(encode(&again), bytes, "re-encoding is not canonical");
    bytes
}

/// The frame decoder on `data` as a byte stream: as `ClientFrame`s under the
/// router's default cap and as `ServerFrame`s under the client's.
///
/// Invariants: the frames and the error do not depend on how the stream is
/// cut into reads; [`FrameDecoder::has_frame`] agrees with
/// [`FrameDecoder::decode`]; every decoded frame round-trips through
/// [`encode`]; a decoded `Deliver` encodes by [`encode_deliver`] to the same
/// bytes as by [`encode`].
pub fn frame_decoder(data: &[u8]) {
    let whole = decode_stream::<ClientFrame>(data, CLIENT_FRAME_CAP, &[]);
    let pieces = decode_stream::<ClientFrame>(data, CLIENT_FRAME_CAP, &[1, 2, 3, 5, 8, 13]);
    assert_eq!(whole, pieces, "ClientFrames depend on how reads are cut");
    if let Some(DecodeError::TooLarge { len, max }) = whole.error {
        assert!(len > max && max == CLIENT_FRAME_CAP);
    }
    for frame in &whole.frames {
        assert_round_trips(frame);
    }
    let whole = decode_stream::<ServerFrame>(data, SERVER_FRAME_CAP, &[]);
    let pieces = decode_stream::<ServerFrame>(data, SERVER_FRAME_CAP, &[7, 1]);
    assert_eq!(whole, pieces, "ServerFrames depend on how reads are cut");
    for frame in &whole.frames {
        let bytes = assert_round_trips(frame);
        if let Some(server_frame::Body::Deliver(deliver)) = &frame.body {
            if let (seq @ 1.., Some(message)) = (deliver.seq, &deliver.message) {
                let split = encode_deliver(seq, &Bytes::from(message.encode_to_vec()));
                let mut joined = split.head.to_vec();
                joined.extend_from_slice(&split.shared);
                assert_eq!(joined, bytes.to_vec(), "encode_deliver != encode");
            }
        }
    }
}

/// The token secret of the fuzz target's verifier (the end-to-end tests'
/// [`crate::SECRET`]; the seed tokens in `fuzz/corpus/token` are signed
/// with it).
pub const TOKEN_SECRET: &[u8] = crate::SECRET;

fn verifier() -> TokenVerifier {
    let auth = Config::default().auth;
    TokenVerifier::new(TOKEN_SECRET, auth.leeway, auth.max_token_lifetime)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The header used when the input names none.
const DEFAULT_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// `header` and `claims` (JSON, or anything) signed with [`TOKEN_SECRET`].
pub fn sign(header: &[u8], claims: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, TOKEN_SECRET),
        input.as_bytes(),
    );
    format!("{input}.{}", b64.encode(tag.as_ref()))
}

/// A JSON object, or `None`.
fn json_object(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice(bytes).ok()
}

/// Token verification on `data`, three ways:
///
/// 1. `data` (lossily UTF-8) as the token itself: it is not signed with our
///    secret, so it must be refused;
/// 2. `data` as the stream a connection starts with: when its first frame,
///    decoded under the router's pre-authentication cap, is a Hello, that
///    Hello's token (refused for the same reason);
/// 3. `data` as `header NUL claims` (or just claims, under an HS256 header),
///    signed with the verifier's secret: the signature is good, so what is
///    checked is the header and the claims. A token accepted there has an
///    HS256 header without `crit`, a valid user id as its `sub` and an
///    `exp` neither past nor beyond the lifetime limit; a header with
///    `crit` is refused as such.
pub fn token(data: &[u8]) {
    let verifier = verifier();
    let auth = Config::default().auth;

    // 1. Arbitrary bytes as a token.
    let text = String::from_utf8_lossy(data);
    match verifier.verify(&text) {
        Ok(user) => {
            // Only a token signed with the secret verifies (the corpus's
            // valid tokens), and its subject is a valid user id.
            assert!(is_valid_id(user.as_str()));
        }
        Err(AuthError::Missing) => assert!(text.is_empty()),
        Err(_) => {}
    }

    // 2. The token of a Hello, as the router's handshake reads it.
    let mut decoder = FrameDecoder::new(HELLO_FRAME_CAP);
    decoder.extend(data);
    if let Ok(Some(ClientFrame {
        body: Some(client_frame::Body::Hello(hello)),
        ..
    })) = decoder.decode::<ClientFrame>()
    {
        if let Ok(user) = verifier.verify(&hello.token) {
            assert!(is_valid_id(user.as_str()));
        }
    }

    // 3. Header and claims from the input, with a good signature.
    let (header, claims) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (DEFAULT_HEADER, data),
    };
    let signed = sign(header, claims);
    let result = verifier.verify(&signed);
    let header_json = json_object(header);
    if header_json.as_ref().is_some_and(|h| h.contains_key("crit")) {
        assert_eq!(result, Err(AuthError::UnknownCritical), "crit in {signed}");
    }
    if let Ok(user) = result {
        let header = header_json.expect("an accepted header is a JSON object");
        assert_eq!(header.get("alg").and_then(|a| a.as_str()), Some("HS256"));
        let claims = json_object(claims).expect("accepted claims are a JSON object");
        assert_eq!(
            claims.get("sub").and_then(|s| s.as_str()),
            Some(user.as_str())
        );
        assert!(is_valid_id(user.as_str()));
        let exp = claims
            .get("exp")
            .and_then(|e| e.as_u64())
            .expect("an accepted token has an integer exp");
        let now = unix_now();
        // A second of slack each way: the clock moved since verify.
        let leeway = auth.leeway.as_secs() + 1;
        assert!(
            exp.saturating_add(leeway) >= now,
            "accepted exp {exp} is past (now {now})"
        );
        let latest = now + (auth.max_token_lifetime + auth.leeway).as_secs() + 1;
        assert!(exp <= latest, "accepted exp {exp} is beyond {latest}");
        if let Some(nbf) = claims.get("nbf").and_then(|n| n.as_u64()) {
            assert!(nbf <= now + leeway, "accepted nbf {nbf} is to come");
        }
    }
}

/// Strings in a TOML value that name a special file (`/dev/zero`,
/// `/proc/...`): the validation of a config reads the files it names, and
/// reading one of those could block or never end.
fn names_special_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => ["/dev", "/proc", "/sys"].iter().any(|p| s.contains(p)),
        toml::Value::Array(items) => items.iter().any(names_special_file),
        toml::Value::Table(table) => table.values().any(names_special_file),
        _ => false,
    }
}

/// Config loading on `data` as the TOML file: parsing, every setting tried
/// alone, merging, then [`Config::validate`] (no environment, no flags).
///
/// Invariants: a loaded config has no validation problem, and written back
/// as TOML it loads to itself; a refused one names at least one problem.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // A config file is read as UTF-8 text; anything else is refused before parsing.
    };
    if toml::from_str::<toml::Value>(text).is_ok_and(|v| names_special_file(&v)) {
        return;
    }
    let flags = FlagOverrides::default();
    match Config::load_str(text, &[], &flags) {
        Ok(config) => {
            assert_eq!(config.validate(), vec![], "a loaded config is valid");
            let written = toml::to_string(&config).expect("a loaded config serializes");
            let reloaded = Config::load_str(&written, &[], &flags)
                .unwrap_or_else(|e| panic!("{written}\ndoes not load again: {e}"));
            assert_eq!(reloaded, config, "written back as\n{written}");
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error names a problem");
            let _ = error.to_string();
        }
    }
}
