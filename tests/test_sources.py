"""detect.py's inputs: every kind of --source, distinct output names, and frames read on a background thread (a
generated video read through the live-stream path drops to the newest frame; files drop nothing)."""
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.inference.reader import FrameReader
from utils.inference.sources import (Input, OutputNames, SourceError, camera_index, count_frames, is_stream_url,
                                     read_frames, resolve_sources, stream_input)


def write_image(path, value=0, shape=(16, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*shape, 3), value, np.uint8))
    return path


def write_video(path, frames, size_wh=(48, 32), fps=10):
    """A clip whose frame i is filled with grey level 4 * i (mod 256), so a read frame tells its number."""
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size_wh)
    for i in range(frames):
        video.write(np.full((size_wh[1], size_wh[0], 3), (4 * i) % 256, np.uint8))
    video.release()
    return path


def stems(found):
    return [item.stem for item in found.inputs]


def test_a_folder_alone_and_recursive(tmp_path):
    write_image(tmp_path / "p" / "b.jpg")
    write_image(tmp_path / "p" / "a.png")
    write_image(tmp_path / "p" / "sub" / "c.jpg")
    assert stems(resolve_sources(str(tmp_path / "p"))) == ["a", "b"]
    found = resolve_sources(str(tmp_path / "p"), recursive=True)
    assert stems(found) == ["a", "b", "sub/c"] and found.locations == [tmp_path / "p"]
    assert [item.kind for item in found.inputs] == ["image"] * 3


def test_recursion_skips_hidden_folders_and_names_other_files_in_one_warning(tmp_path):
    write_image(tmp_path / "p" / "a.jpg")
    write_image(tmp_path / "p" / ".git" / "inside.jpg")
    write_image(tmp_path / "p" / "sub" / ".cache" / "thumb.jpg")
    for k in range(7):
        (tmp_path / "p" / f"notes{k}.txt").write_text("not an image")
    with pytest.warns(UserWarning) as caught:
        found = resolve_sources(str(tmp_path / "p"), recursive=True)
    assert stems(found) == ["a"]
    (warning,) = caught
    assert str(warning.message).startswith("skipping 7 file(s) that are not images or videos")
    assert str(warning.message).endswith(f"{tmp_path / 'p' / 'notes4.txt'} and 2 more")


def test_a_glob_mirrors_the_layout_below_its_fixed_folder(tmp_path):
    write_image(tmp_path / "p" / "x" / "a.jpg")
    write_image(tmp_path / "p" / "y" / "a.jpg")
    found = resolve_sources(str(tmp_path / "p" / "*" / "*.jpg"))
    assert stems(found) == ["x/a", "y/a"] and found.locations == [tmp_path / "p"]
    with pytest.raises(SourceError, match=r"\*\.bmp: the pattern matches no files"):
        resolve_sources(str(tmp_path / "p" / "*.bmp"))


def test_same_named_inputs_get_distinct_output_names(tmp_path):
    write_image(tmp_path / "p" / "a.jpg")
    write_image(tmp_path / "p" / "a.png")
    write_image(tmp_path / "p" / "A.bmp")  # the same name on a case-insensitive file system
    write_video(tmp_path / "p" / "a.avi", 2)  # a video writes a.mp4 and labels/a/: no clash with the images
    found = resolve_sources(str(tmp_path / "p"))
    assert {Path(item.label).name: item.stem for item in found.inputs} == \
        {"A.bmp": "A", "a.avi": "a", "a.jpg": "a_2", "a.png": "a_3"}  # in sorted order, the first keeps its name


def test_a_video_and_images_in_a_folder_of_its_name_stay_apart():
    names = OutputNames()
    assert names.claim("clip/000001", video=False) == "clip/000001"
    assert names.claim("clip", video=True) == "clip_2"  # its labels/clip/000001.txt would be the image's
    assert names.claim("clip_2/000001", video=False) == "clip_2_2/000001"  # its folder is a video's


def test_a_list_of_sources(tmp_path):
    write_image(tmp_path / "day" / "x.jpg")
    write_image(tmp_path / "night" / "x.jpg")
    write_image(tmp_path / "more" / "x.png")
    write_image(tmp_path / "single.jpg")
    write_video(tmp_path / "clip.avi", 2)
    listing = tmp_path / "lists" / "sources.txt"
    listing.parent.mkdir()
    listing.write_text(f"# cameras and folders\n{tmp_path / 'day'}\n\n../night\n{tmp_path / 'more'}/*.png\n"
                       f"../single.jpg\n{tmp_path / 'clip.avi'}\n1\nrtsp://cam.local/live\n")
    found = resolve_sources(str(listing))
    assert stems(found) == ["day/x", "night/x", "more/x", "single", "clip", "camera1", "cam.local_live"]
    assert [item.kind for item in found.inputs] == ["image"] * 4 + ["video", "camera", "stream"]
    assert found.locations == [listing, tmp_path / "day", listing.parent / "../night", tmp_path / "more",
                               listing.parent / "../single.jpg", tmp_path / "clip.avi"]


def test_a_list_names_the_line_of_a_bad_source(tmp_path):
    listing = tmp_path / "sources.txt"
    listing.write_text("# nothing else\n\nabsent/\n")
    with pytest.raises(SourceError, match=r"sources\.txt:3: absent/: no such file or folder"):
        resolve_sources(str(listing))
    listing.write_text("other.txt\n")
    with pytest.raises(SourceError, match=r"sources\.txt:1: other\.txt: a list of sources cannot name another"):
        resolve_sources(str(listing))
    listing.write_text("# only comments\n")
    with pytest.raises(SourceError, match="names none"):
        resolve_sources(str(listing))


def test_a_file_named_twice_is_read_once(tmp_path):
    write_image(tmp_path / "p" / "a.jpg")
    listing = tmp_path / "sources.txt"
    listing.write_text(f"{tmp_path / 'p'}\n{tmp_path / 'p' / 'a.jpg'}\n")
    with pytest.warns(UserWarning, match="named more than once"):
        assert stems(resolve_sources(str(listing))) == ["p/a"]


def test_cameras_and_stream_urls_are_recognised_without_opening_them(tmp_path, monkeypatch):
    assert camera_index("0") == 0 and camera_index(" 12 ") == 12 and camera_index("0.5") is None
    assert is_stream_url("rtsp://host/x") and is_stream_url("HTTP://host:8080/video.mjpg")
    assert not is_stream_url("photos/x.jpg") and not is_stream_url("rtsp:/nohost") and not is_stream_url("ftp://h/x")
    stream = stream_input("rtsp://admin:secret@10.0.0.5:554/Streaming/Channels/101")
    assert stream.kind == "stream" and stream.live and stream.target.startswith("rtsp://admin:secret@")
    assert stream.stem == "10.0.0.5_554_Streaming_Channels_101"
    assert stream.label == "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"  # never the password
    found = resolve_sources("0")
    assert found.inputs == [Input("camera", 0, "camera0", "camera 0")] and found.locations == []
    assert count_frames(found.inputs) is None  # a live source has no known end
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "0" / "a.jpg")  # a folder of that name is what "0" means here
    assert [item.kind for item in resolve_sources("0").inputs] == ["image"]


def test_a_video_file_is_read_whole_through_the_reader(tmp_path):
    clip = write_video(tmp_path / "clip.avi", 12)
    source = Input("video", str(clip), "clip", str(clip))
    skipped = []
    with FrameReader(read_frames([source], skipped), queue_frames=2) as reader:
        frames = []
        for frame in reader:
            time.sleep(0.01)  # slower than decoding: a file still loses nothing
            frames.append(frame)
    assert [f.index for f in frames] == list(range(12)) and reader.dropped == 0 and not skipped
    assert frames[0].fps == pytest.approx(10) and frames[0].pixels.shape == (32, 48, 3)


def test_a_stream_drops_to_the_newest_frame_and_ends_cleanly(tmp_path):
    """A generated clip opened exactly as a stream URL is (kind "stream": the live path) by a slow consumer."""
    clip = write_video(tmp_path / "clip.avi", 40)
    stream = Input("stream", str(clip), "clip", "clip")
    with FrameReader(read_frames([stream], [])) as reader:
        seen = []
        for frame in reader:
            seen.append(frame)
            time.sleep(0.05)
    indices = [f.index for f in seen]
    assert indices == sorted(set(indices)) and indices[-1] == 39  # in order, and the last frame is not lost
    assert len(seen) < 40 and reader.dropped == 40 - len(seen)
    levels = [int(f.pixels.mean()) for f in seen]
    assert all(abs(level - 4 * i) <= 3 for level, i in zip(levels, indices))  # each frame is the one it says


def test_closing_the_reader_stops_its_thread_and_releases_the_source(tmp_path):
    clip = write_video(tmp_path / "clip.avi", 200)
    released = threading.Event()

    def frames():
        try:
            yield from read_frames([Input("stream", str(clip), "clip", "clip")], [])
        finally:
            released.set()
    reader = FrameReader(frames())
    first = next(iter(reader))
    reader.close()
    assert first.index is not None and released.wait(5) and not reader._thread.is_alive()


def test_an_error_while_reading_is_raised_to_the_consumer():
    def frames():
        raise OSError("disk gone")
        yield  # a generator
    with pytest.raises(OSError, match="disk gone"):
        list(FrameReader(frames()))


def test_unreadable_files_are_skipped_and_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    sources = [Input("image", str(tmp_path / "broken.jpg"), "b", str(tmp_path / "broken.jpg")),
               Input("video", str(tmp_path / "broken.mp4"), "v", str(tmp_path / "broken.mp4"))]
    skipped = []
    with pytest.warns(UserWarning, match="skipping"):
        assert list(read_frames(sources, skipped)) == []
    assert skipped == [str(tmp_path / "broken.jpg"), str(tmp_path / "broken.mp4")]
    assert os.path.exists(tmp_path / "broken.mp4")


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_source_is_refused_rather_than_read_as_the_current_folder(spec):
    with pytest.raises(SourceError, match=r"the source is empty: name a folder, .* \('\.' for the current folder\)"):
        resolve_sources(spec)
