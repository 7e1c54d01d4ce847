"""Specs: every setting of a job, validated with pydantic. This layer imports no
implementation code (only pydantic, yaml and :mod:`recmind_dist.errors`/``hashing``)."""

from recmind_dist.specs.base import Spec
from recmind_dist.specs.data import DataSpec, SplitSpec, SyntheticSpec, TableSpec
from recmind_dist.specs.embed import EmbedSpec
from recmind_dist.specs.generation import GenerateSpec
from recmind_dist.specs.job import (
    EvalSpec,
    JobSpec,
    TrackingSpec,
    TrainSpec,
    apply_overrides,
    load_spec,
    parse_spec,
)
from recmind_dist.specs.models import (
    GATLLMSpec,
    LightGCNSpec,
    LLMRecSpec,
    MFSpec,
    ModelSpec,
    PopularitySpec,
    RecMindSpec,
    SimGCLSpec,
    XSimGCLSpec,
)
from recmind_dist.specs.text import TextSpec, template_fields

__all__ = [
    "DataSpec", "EmbedSpec", "EvalSpec", "GATLLMSpec", "GenerateSpec", "JobSpec", "LLMRecSpec",
    "LightGCNSpec", "MFSpec", "ModelSpec", "PopularitySpec", "RecMindSpec", "SimGCLSpec", "Spec",
    "SplitSpec", "SyntheticSpec", "TableSpec", "TextSpec", "TrackingSpec", "TrainSpec",
    "XSimGCLSpec", "apply_overrides", "load_spec", "parse_spec", "template_fields",
]
