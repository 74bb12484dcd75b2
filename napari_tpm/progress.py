"""The one progress record that every long job yields.

Long work (encoding a volume, fitting prototypes, training, adapting) is written as a generator
that yields `Progress`. The CLI drains it with a tqdm bar, the napari widget in a thread worker,
and the tests directly, so all three run the very same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """How far a job has come.

    Attributes:
        done: units finished so far (slices, steps, episodes...).
        total: units in the whole job.
        stage: short human-readable name of the current stage ("encode", "score", ...).
        slices: for volume jobs, the (start, stop) range of slices along the slice axis that
            became available with this step, so a viewer can refresh just those.
        info: free-form numbers worth showing (loss, it/s...).
    """

    done: int
    total: int
    stage: str = ""
    slices: tuple[int, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)
