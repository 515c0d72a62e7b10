from vidpipe.ids import new_id


def test_ids_are_strictly_increasing_and_prefixed() -> None:
    ids = [new_id("video") for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("video_") and len(i) == len("video_") + 26 for i in ids)
