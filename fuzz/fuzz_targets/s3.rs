//! What a provider reads from deployers and stores for S3 inputs and outputs: a credentials
//! file sent with `deploy --secret`, an `s3://` URL and its key, and a `ListObjectsV2` page
//! (XML) from the store. Never panics; credentials that parse have both keys; a listing
//! that parses holds no key over the limit.
#![no_main]

use nunet_ensemble::data::{MAX_KEY, S3Credentials, key_parts, parse_s3_url, valid_bucket};
use nunet_objectstore::ListingPage;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = S3Credentials::parse(text) {
        assert!(!c.access_key_id.is_empty(), "credentials without a key id");
    }
    if let Ok((bucket, key)) = parse_s3_url(text) {
        assert!(valid_bucket(&bucket), "an invalid bucket {bucket:?} parsed");
        let _ = key_parts(&key);
    }
    if let Ok(page) = ListingPage::parse(text) {
        assert!(page.objects.iter().all(|o| o.key.len() <= MAX_KEY));
    }
});
