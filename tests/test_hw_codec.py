"""Jetson hardware decode/encode: the GStreamer pipeline strings (pure functions) and the fallback
to the software path where OpenCV has no GStreamer (every PyPI wheel, this machine)."""
import cv2
import numpy as np

from runtime.app import hw_codec
from runtime.app.sinks import Rendered, VideoFileSink
from runtime.app.sources import Frame, open_source


def test_file_pipeline_uses_nvv4l2decoder_with_the_right_demuxer_and_parser():
    pipeline = hw_codec.file_decode_pipeline("/data/my clips/run 1.mp4", "h265")
    assert pipeline.startswith('filesrc location="/data/my clips/run 1.mp4" ! qtdemux ! queue ! h265parse ! nvv4l2decoder')
    assert pipeline.endswith("format=BGR ! appsink sync=false")
    assert "matroskademux ! queue ! h264parse" in hw_codec.file_decode_pipeline("a.MKV", "h264")
    assert hw_codec.file_decode_pipeline("a.mp4", "mpeg4") is None  # codec nvv4l2decoder path not built here
    assert hw_codec.file_decode_pipeline("frames.gif", "h264") is None


def test_rtsp_pipeline_quotes_the_url_and_keeps_only_the_newest_frame():
    pipeline = hw_codec.rtsp_decode_pipeline('rtsp://cam/stream?a=1&b="x"', latency_ms=100)
    assert pipeline.startswith('rtspsrc location="rtsp://cam/stream?a=1&b=\\"x\\"" latency=100 ! rtph264depay ! h264parse')
    assert "nvv4l2decoder" in pipeline and "drop=true max-buffers=1" in pipeline
    assert hw_codec.rtsp_decode_pipeline("http://cam/stream") is None


def test_encode_pipeline_uses_nvenc_into_the_container_of_the_name():
    pipeline = hw_codec.file_encode_pipeline("out dir/demo.mp4", bitrate_kbps=4000)
    assert pipeline.startswith("appsrc ! video/x-raw, format=BGR ! videoconvert")
    assert "nvv4l2h264enc bitrate=4000000 ! h264parse ! qtmux ! filesink location=\"out dir/demo.mp4\"" in pipeline
    assert "matroskamux" in hw_codec.file_encode_pipeline("x.mkv")
    assert hw_codec.file_encode_pipeline("x.avi") is None


def test_codec_from_fourcc():
    assert hw_codec.codec_from_fourcc(cv2.VideoWriter_fourcc(*"avc1")) == "h264"
    assert hw_codec.codec_from_fourcc(cv2.VideoWriter_fourcc(*"hev1")) == "h265"
    assert hw_codec.codec_from_fourcc(cv2.VideoWriter_fourcc(*"mp4v")) is None


def test_without_gstreamer_files_decode_and_encode_in_software_and_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(hw_codec, "opencv_has_gstreamer", lambda: False)
    video = tmp_path / "in clip.mp4"
    with VideoFileSink(video, 10) as sink:
        for i in range(3):
            image = np.full((32, 48, 3), i * 40, np.uint8)
            sink.write(Rendered(image, Frame(i, image), np.zeros((32, 48), np.uint8)))
    assert sink.encoder.startswith("software (OpenCV has no GStreamer")
    assert "encoded in software" in sink.report()
    with open_source(str(video)) as source:
        assert source.decoder == "software (OpenCV has no GStreamer)"
        assert source.read() is not None


def test_with_gstreamer_but_no_nvidia_element_the_software_path_is_kept(monkeypatch):
    monkeypatch.setattr(hw_codec, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(hw_codec, "gstreamer_element_exists", lambda name: False)
    capture, why = hw_codec.open_hw_capture("clip.mp4", "video clip.mp4")
    assert capture is None and "no nvv4l2decoder element" in why
