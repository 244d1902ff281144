//! object_store against a real S3-protocol server: what the pageserver's checkpoints rely on.

use borealis_tests::s3::S3Server;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};

#[tokio::test]
async fn put_get_list_delete_and_conditional_put_through_s3s_fs() {
    let server = S3Server::start("borealis");
    let store = borealis_objstore::open(&server.url("borealis")).expect("open s3 store");

    let key = Path::from("tenants/0000000000000001/segments/0/layers/image-10-00000001");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put(&key, PutPayload::from(payload.clone()))
        .await
        .expect("put");
    let back = store
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(back.len(), payload.len());
    assert_eq!(&back[..], &payload[..], "object came back different");

    let listed: Vec<_> = store
        .list(Some(&Path::from("tenants/0000000000000001")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location, key);
    assert_eq!(listed[0].size as usize, payload.len());

    // Create-only put: the second must fail rather than overwrite (generation fencing relies on
    // never overwriting). Servers without conditional writes are reported, not silently passed.
    let only = Path::from("tenants/0000000000000001/segments/0/index-00000001.json");
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let first = store
        .put_opts(&only, PutPayload::from_static(b"{\"v\":1}"), create.clone())
        .await;
    match first {
        Ok(_) => {
            let second = store
                .put_opts(&only, PutPayload::from_static(b"{\"v\":2}"), create)
                .await;
            assert!(
                second.is_err(),
                "a create-only put overwrote an existing object"
            );
            let kept = store.get(&only).await.unwrap().bytes().await.unwrap();
            assert_eq!(&kept[..], b"{\"v\":1}");
        }
        Err(e) => eprintln!("NOTE: this S3 server does not support conditional puts: {e}"),
    }

    // Multipart upload (large layer files): three parts of 5 MiB, read back whole.
    let big_key = Path::from("tenants/0000000000000001/segments/0/layers/delta-big-00000001");
    let mut upload = store
        .put_multipart(&big_key)
        .await
        .expect("start multipart");
    let mut expected = Vec::new();
    for part in 0..3u8 {
        let chunk = vec![part + 1; 5 * 1024 * 1024];
        expected.extend_from_slice(&chunk);
        upload
            .put_part(PutPayload::from(chunk))
            .await
            .expect("put part");
    }
    upload.complete().await.expect("complete multipart");
    let back = store
        .get(&big_key)
        .await
        .expect("get multipart")
        .bytes()
        .await
        .expect("body");
    assert_eq!(back.len(), expected.len());
    assert!(back[..] == expected[..], "multipart object differs");

    store.delete(&key).await.expect("delete");
    assert!(matches!(
        store.get(&key).await,
        Err(object_store::Error::NotFound { .. })
    ));
}
