"""Model adapters: one small module per family over the stock transformers classes."""

from __future__ import annotations

from specvlm.models.base import ModelAdapter, SideFeatures, VideoLayout, VisualLayout
from specvlm.models.gemma4 import Gemma4Adapter
from specvlm.models.glm4v import Glm4vAdapter
from specvlm.models.internvl import InternVLAdapter
from specvlm.models.llava_onevision import LlavaOnevisionAdapter
from specvlm.models.llava_onevision1_5 import LlavaOnevision15Adapter
from specvlm.models.qwen2_5_vl import Qwen25VLAdapter
from specvlm.models.qwen2_vl import Qwen2VLAdapter
from specvlm.models.qwen3_5 import Qwen35Adapter
from specvlm.models.qwen3_vl import Qwen3VLAdapter

ADAPTERS = {
    cls.family: cls
    for cls in (
        LlavaOnevisionAdapter,
        Qwen25VLAdapter,
        Qwen2VLAdapter,
        Qwen3VLAdapter,
        InternVLAdapter,
        LlavaOnevision15Adapter,
        Glm4vAdapter,
        Qwen35Adapter,
        Gemma4Adapter,
    )
}


def family_of(config) -> str:
    """The adapter family for a model config; raises for an unsupported one, listing the supported families."""
    model_type = getattr(config, "model_type", None)
    for family, cls in ADAPTERS.items():
        if model_type in cls.model_types:
            return family
    types = ", ".join(t for family in sorted(ADAPTERS) for t in ADAPTERS[family].model_types)
    raise ValueError(f"unsupported model type {model_type!r}; supported model types: {types}")


def adapter_for(model) -> ModelAdapter:
    """Wrap a loaded stock model in the adapter of its family."""
    return ADAPTERS[family_of(model.config)](model)


__all__ = ["ADAPTERS", "ModelAdapter", "SideFeatures", "VideoLayout", "VisualLayout", "adapter_for", "family_of"]
