"""SpecVLM: lossless speculative decoding for video LLMs with verifier-guided video-token pruning.

    from specvlm import SpecVLM
    engine = SpecVLM.from_pretrained("llava-hf/llava-onevision-qwen2-72b-ov-hf",
                                     draft="llava-hf/llava-onevision-qwen2-7b-ov-hf")
    result = engine.generate(video="clip.mp4", prompt="Describe the video.")
"""

from specvlm.config import METHODS, DecodingConfig
from specvlm.engine import SpecVLM
from specvlm.images import ImageLoadError
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.video import Video, VideoDecodeError, load_video

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "DecodingConfig",
    "GenerationResult",
    "GenerationStats",
    "ImageLoadError",
    "SpecVLM",
    "Video",
    "VideoDecodeError",
    "load_video",
    "__version__",
]
