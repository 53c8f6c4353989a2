//! ACME requests are JWS in flattened JSON (RFC 8555 §6.2, RFC 7515): a protected header
//! (alg, nonce, url, and jwk for new accounts or kid for the others), a payload and a
//! signature over both. Verified here with ring: ES256, ES384 (fixed-size r‖s) and RS256.
//! Key thumbprints follow RFC 7638.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;

/// A request's JWS, as sent.
#[derive(Debug, Deserialize)]
pub struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

/// The protected header.
#[derive(Debug, Deserialize)]
pub struct Header {
    /// The algorithm.
    pub alg: String,
    /// The nonce this request spends.
    pub nonce: Option<String>,
    /// The URL it was sent to.
    pub url: String,
    /// The account key (new accounts).
    pub jwk: Option<serde_json::Value>,
    /// The account URL (everything else).
    pub kid: Option<String>,
}

/// A verified request.
#[derive(Debug)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// The payload (empty: POST-as-GET).
    pub payload: Vec<u8>,
}

/// Why a request is refused: (ACME error type, detail).
pub type Refusal = (&'static str, String);

fn malformed(detail: impl Into<String>) -> Refusal {
    ("malformed", detail.into())
}

/// Decode a request body into its parts, without checking the signature yet.
pub fn parse(body: &[u8]) -> Result<(Flattened, Header, Vec<u8>), Refusal> {
    let f: Flattened =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not a flattened JWS: {e}")))?;
    let protected = B64
        .decode(&f.protected)
        .map_err(|_| malformed("protected header: not base64url"))?;
    let header: Header = serde_json::from_slice(&protected)
        .map_err(|e| malformed(format!("protected header: {e}")))?;
    let payload = B64
        .decode(&f.payload)
        .map_err(|_| malformed("payload: not base64url"))?;
    if header.jwk.is_some() == header.kid.is_some() {
        return Err(malformed(
            "exactly one of jwk and kid must be in the header",
        ));
    }
    Ok((f, header, payload))
}

/// Check `f`'s signature with the key `jwk`.
pub fn verify(f: &Flattened, alg: &str, jwk: &serde_json::Value) -> Result<(), Refusal> {
    let signing_input = format!("{}.{}", f.protected, f.payload);
    let sig = B64
        .decode(&f.signature)
        .map_err(|_| malformed("signature: not base64url"))?;
    let field = |k: &str| -> Result<Vec<u8>, Refusal> {
        let v = jwk[k]
            .as_str()
            .ok_or_else(|| ("badPublicKey", format!("jwk has no {k}")))?;
        B64.decode(v)
            .map_err(|_| ("badPublicKey", format!("jwk {k}: not base64url")))
    };
    let ok = match (alg, jwk["kty"].as_str()) {
        ("ES256" | "ES384", Some("EC")) => {
            let (algorithm, crv, len): (&ring::signature::EcdsaVerificationAlgorithm, _, _) =
                if alg == "ES256" {
                    (&ring::signature::ECDSA_P256_SHA256_FIXED, "P-256", 32)
                } else {
                    (&ring::signature::ECDSA_P384_SHA384_FIXED, "P-384", 48)
                };
            if jwk["crv"].as_str() != Some(crv) {
                return Err(("badPublicKey", format!("{alg} needs a {crv} key")));
            }
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != len || y.len() != len {
                return Err(("badPublicKey", "EC coordinates of the wrong size".into()));
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ring::signature::UnparsedPublicKey::new(algorithm, &point)
                .verify(signing_input.as_bytes(), &sig)
                .is_ok()
        }
        ("RS256", Some("RSA")) => {
            let key = ring::signature::RsaPublicKeyComponents {
                n: field("n")?,
                e: field("e")?,
            };
            key.verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                signing_input.as_bytes(),
                &sig,
            )
            .is_ok()
        }
        (alg, kty) => {
            return Err((
                "badSignatureAlgorithm",
                format!(
                    "{alg} with a {} key: this CA takes ES256, ES384 and RS256",
                    kty.unwrap_or("?")
                ),
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(malformed("the signature does not verify"))
    }
}

/// The RFC 7638 thumbprint of a JWK (base64url of SHA-256 of its required members).
pub fn thumbprint(jwk: &serde_json::Value) -> Result<String, Refusal> {
    let s = |k: &str| {
        jwk[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ("badPublicKey", format!("jwk has no {k}")))
    };
    // members in lexicographic order, no spaces (serde_json::json! would sort too, but
    // the order is the point here, so it is written out)
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            serde_json::Value::String(s("crv")?),
            serde_json::Value::String(s("x")?),
            serde_json::Value::String(s("y")?)
        ),
        Some("RSA") => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            serde_json::Value::String(s("e")?),
            serde_json::Value::String(s("n")?)
        ),
        other => {
            return Err((
                "badPublicKey",
                format!("key type {other:?}: this CA takes EC and RSA account keys"),
            ));
        }
    };
    Ok(B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn an_es256_signature_verifies_and_a_changed_payload_does_not() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let point = key.public_key().as_ref();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
        let header = B64.encode(
            serde_json::json!({"alg": "ES256", "jwk": jwk, "nonce": "n", "url": "https://x/new-account"})
                .to_string(),
        );
        let payload = B64.encode(b"{}");
        let sig = key
            .sign(&rng, format!("{header}.{payload}").as_bytes())
            .unwrap();
        let body = serde_json::json!({"protected": header, "payload": payload, "signature": B64.encode(sig.as_ref())});
        let (f, h, p) = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(p, b"{}");
        verify(&f, &h.alg, h.jwk.as_ref().unwrap()).unwrap();
        let forged = serde_json::json!({"protected": header, "payload": B64.encode(b"{\"x\":1}"), "signature": B64.encode(sig.as_ref())});
        let (f, h, _) = parse(forged.to_string().as_bytes()).unwrap();
        assert!(verify(&f, &h.alg, h.jwk.as_ref().unwrap()).is_err());
        // garbage is a refusal, never a panic
        for bad in [
            &b""[..],
            b"{}",
            b"{\"protected\":\"!!\",\"payload\":\"\",\"signature\":\"\"}",
        ] {
            assert!(parse(bad).is_err());
        }
    }
}
