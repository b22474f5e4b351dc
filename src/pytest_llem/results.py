"""The data that crosses the process boundary and lands in reports, as pydantic models.

The child never pickles Python objects back to pytest: it writes a `ChildOutcome` as JSON
and the parent validates it. Energy fields stay `None` when no meter measured them;
`warnings` says why, so a missing figure is never mistaken for a zero.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator


class QualityWarning(BaseModel):
    """A measurement-quality flag: a stable machine-readable code and a sentence for people."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class DeviceEnergy(BaseModel):
    """Energy one device used during the measured window(s)."""

    device: str
    energy_j: float


class WindowMeasurement(BaseModel):
    """What an energy meter saw over one window."""

    duration_s: float
    energy_j: float | None = None
    devices: list[DeviceEnergy] = Field(default_factory=list)
    warnings: list[QualityWarning] = Field(default_factory=list)


class ExperimentResult(BaseModel):
    """One experiment's measured figures. Rates are derived, so they can never disagree."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    config_hash: str
    config: dict[str, Any]
    workload: str | None = None
    duration_s: float = Field(description="summed length of the measured windows")
    window_count: int = Field(ge=1)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    energy_j: float | None = None
    energy_source: str | None = None
    energy_by_device: list[DeviceEnergy] = Field(default_factory=list)
    warnings: list[QualityWarning] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    resumed: bool = False

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_fields(cls, data: Any) -> Any:
        # A dumped result carries its derived rates; they are recomputed, never trusted.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in ("tokens_per_s", "energy_per_token_j")}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_s(self) -> float | None:
        if not self.output_tokens or self.duration_s <= 0:
            return None
        return self.output_tokens / self.duration_s

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_token_j(self) -> float | None:
        """Energy per *output* token, the figure LLM energy benchmarks compare."""
        if self.energy_j is None or not self.output_tokens:
            return None
        return self.energy_j / self.output_tokens
