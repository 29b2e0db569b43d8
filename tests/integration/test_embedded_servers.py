"""Several embedded tiled servers in one process keep answering their own clients."""

from xbeam_bluesky.storage import open_storage


def test_second_embedded_server_does_not_lock_out_the_first(tmp_path):
    # tiled keeps the single-user API key in process-global settings; a second server with its own key
    # used to turn every request of the first server's clients into 401 Invalid API key.
    with open_storage(data_dir=tmp_path / "a") as first:
        first.client.write_array([1.0, 2.0], key="probe")
        with open_storage(data_dir=tmp_path / "b") as second:
            assert list(second.client) == []
            assert list(first.client) == ["probe"]
        assert first.client["probe"].read().tolist() == [1.0, 2.0]
