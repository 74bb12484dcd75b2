"""The accuracy knobs of a segmentation session, with the defaults the measurements chose.

One frozen dataclass so the CLI, the widget, the evaluation and the benchmarks pass the same
names, and a session can say exactly how it segmented. The defaults are the settings measured
best on the development data's tuning volumes and then checked on volumes kept out of every
choice (benchmarks/RESULTS-accuracy.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["CLASS_BOUNDARIES", "SegmentOptions"]

#: the values of ``SegmentOptions.class_boundaries``
CLASS_BOUNDARIES = ("shared", "relax", "own")


@dataclass(frozen=True)
class SegmentOptions:
    """How the session turns prototypes into labels beyond the one-pass TPM.

    Attributes:
        connected: keep only the 3D regions connected to the paint (the largest region when the
            support came from another volume). An organ is one 3D region; look-alike tissue
            elsewhere is the commonest error of a prototype model.
        complete_paint: paint on this volume that covers only part of its organ on a slice (a
            stroke or a dab of the brush inside it) is completed to the organ's section there
            first (``napari_tpm.scribble.complete_section``: a marker watershed on the image's
            gradient), so it defines the prototype and the calibration as a filled section
            would; paint that already outlines its organ is used as painted. Same scan, held
            out, BTCV / CHAOS: a stroke 0.79 / 0.66 -> 0.87 / 0.76, a dab 0.10 / 0.14 ->
            0.82 / 0.44; 21 of 1944 held-out outlines (mostly vessels and the pancreas) were
            completed too, for the worse (benchmarks/RESULTS-accuracy.md, "Partial paint").
        grow_scribbles: a thin, elongated stroke left as drawn by ``complete_paint`` is grown
            on its slice to the region the model assigns to it (``napari_tpm.scribble``) before
            it defines the prototype and the calibration; a filled region is used as painted.
        class_boundaries: with several structures, what each one's own painted count does to
            its decision boundary (models without a learned threshold): ``"shared"`` nothing,
            one boundary for all; ``"own"`` each its own boundary; ``"relax"`` its own only
            where that is looser than the shared one (never stricter), the structure a voxel
            belongs to still decided on the shared scores. With one shared boundary a liver
            painted on a slice low in it comes out a fraction of its size beside the kidneys
            and spleen; with "own" the kidneys lose instead.
        refine: iterations of transductive TPM on the query for paint on this volume (0: the
            plain one-pass TPM). Each refits the prototypes and the per-slice class priors on
            the query's own features by EM, regularised towards the support
            (``tpm.transductive``). Paint on the organ's middle slice changes by at most 0.01;
            paint near its end gains most (a liver painted low in it: prototypes from its tip
            miss its wider sections, which the refit reaches; benchmarks/RESULTS-accuracy.md).
            Not in the second pass from another volume's paint (``bootstrap``): it starts on
            the first result's most confident slice, where refining gained nothing.
        refine_atlas: the same, used when the support was painted on another volume (an atlas or
            another patient): there the support's prototype misses the query's appearance.
        refine_weight: strength of the support prior in the refinement, in units of the
            support's own pixel count (1: the support counts as much as as many query pixels).
        slice_priors: let the refinement estimate a class prior per slice (off: no gain measured
            on the tuning volumes).
        prior_smoothing: smoothing of those priors along the slices (in slices).
        slice_boundaries: with paint on several slices of this volume and a model without a
            learned threshold, each painted slice gets its own decision boundary (the one
            that reproduces its own painted count), linear between painted slices and the
            nearest one's beyond them, instead of one boundary pooled over all of them: a
            slice painted at a kidney's pole, with the spleen beside it scoring like the
            kidney, otherwise raises the boundary for the whole kidney (tuning, two painted
            slices: CHAOS 0.887 -> 0.899, BTCV 0.899 -> 0.906; benchmarks/RESULTS-accuracy.md,
            "Each painted slice its own boundary").
        refine_gate: only the first pass's 3D component that touches the paint (or the largest,
            for another volume's support) pulls each class's prototypes.
        recalibrate: after refining, place the decision boundary again on the painted slices.
        smooth_mm: 3D Gaussian smoothing of the class log-odds, in millimetres (0: off). Scores
            are computed slice by slice; smoothing across slices makes the result coherent in 3D.
        neck: with ``connected``, cut what joins the organ through a neck thinner than twice
            this fraction of the paint's inscribed radius (2-10 mm; 0: off). Leaks into touching
            look-alike tissue (kidney into spleen, spleen along the colon) pass through such
            necks (:mod:`napari_tpm.necks`).
        hard_negatives: unpainted pixels of the painted slices that still score as organ
            (away from the paint) become background evidence, like background strokes: a
            look-alike beside the organ (a liver beside a kidney) is then pushed out. Only
            for the user's paint on this volume, and only where such pixels are under a tenth
            of the paint's count (``_session_scoring.MINE_MAX_SHARE``). Off: mixed held out
            (on for one structure on CT, BTCV 0.870 -> 0.874 over every mode painted on the
            scan, TotalSegmentator CT 0.857 -> 0.851, AMOS 0.761 -> 0.763; on the tuning T2
            MR and with four organs painted at once it lost; benchmarks/RESULTS-accuracy.md,
            "Look-alikes of the painted slice").
        snap_mm: with ``connected``, re-decide the pixels within this many millimetres of the
            outline by the organ's intensity at native resolution (0: off); the scores'
            stride blur otherwise leaves the result a pixel or two small
            (:mod:`napari_tpm.boundary`).
        halfway_edge: with ``snap_mm``, then grow the outline through the edge's
            partial-volume pixels, up to ``snap_mm`` out: a pixel joins when its intensity is
            nearer the organ's than that of the tissue just beyond it, where that tissue makes
            a real edge (``napari_tpm.boundary.grow_to_edge``). Manual labels include the
            edge pixels; the snap's fixed tolerance left them out.
        exact_paint: with ``connected`` and paint on this volume, a slice on which one
            structure was painted as a filled region (not a stroke, which is grown) keeps
            exactly that paint: the user outlined the organ there, so whatever else scores as
            the organ on that slice is a look-alike neighbour, and the slice continuity then
            starts from the paint alone instead of carrying that neighbour on through the next
            slices. Slices with several structures painted keep their result (one structure is
            often caught at its tip there, and the next slices widen faster than the sweep
            follows from the paint alone).
        stroke_regions: with ``connected``, a background stroke removes the part of a
            structure's result it marks, not only its own pixels: each voxel of the result
            goes to the paint or the strokes, whichever it reaches more cheaply along paths
            inside the result, a path through a narrow part costing more
            (:mod:`napari_tpm.exclusion`), and the strokes' part goes. A look-alike
            neighbour touching the organ otherwise stays joined to it around the stroke.
        continuity: with ``connected`` and paint on this volume, walk outward from the
            painted slices; past the organ's widest slice, keep a 2D piece of a slice's result
            whole only when at least this fraction of it lies on the previous slice's result,
            else only its part on it (0: off). Stops a leak into a neighbour that touches the
            organ over a broad contact, which a neck cut cannot separate. There, a piece kept
            whole is also split at its 2D necks, and a part lying mostly off the previous
            slice's result and well beyond it is dropped: a neighbour creeping in a few hundred
            pixels per slice (:mod:`napari_tpm.continuity`).
        continuity_end: with ``continuity``, past the organ's widest slice the walk ends where
            the slice's result covers all of the previous slice's result and reaches beyond
            it: the organ only shrinks towards its end, so that is a neighbour lying under its
            last footprint (:data:`napari_tpm.continuity.COVER_END`).
        outrunning_parts: with ``connected`` and paint on this volume, split each result
            into 3D parts at its saddles and drop a part that holds almost none of the paint,
            is not deeper than the painted part and reaches over 20 mm beyond its slices: a
            neighbour that joined the organ while its result still widened (the left kidney
            below the spleen on T2 MR) and that the walk then followed
            (:mod:`napari_tpm.parts3d`).
        fill_concave: with ``connected`` and paint on this volume, a structure whose every
            painted section is nearly convex (solidity >= 0.93: the outline takes in the
            organ's concavities, a kidney's sinus on CHAOS) has each 2D piece of its result on
            the other slices filled into its convex hull, nearest pixels first, up to the
            paint's solidity (:mod:`napari_tpm.concavity`). The scores follow the image, which
            leaves such a kidney C-shaped around its dark sinus.
        pole_features: with paint on this volume, a structure painted only on a section
            under 200 mm² (an organ's pole, :mod:`napari_tpm.paint_size`) takes its prototypes
            from the same footprint on the next slice towards the organ's body, where the
            organ fills the slice's thickness: the pole's partial-volume features miss the
            organ (BTCV tuning, all four organs on one slice: two right kidneys 0.01 -> 0.81
            and 0.02 -> 0.83).
        tip_shift: with one slice painted on this volume and a model without a learned
            threshold, move the auto prior's boundary out by up to this many log-odds units
            when the first result lies mostly on one side of the painted slice: the paint was
            near the organ's end, where the support slice's own calibration is too strict
            (:mod:`napari_tpm.paint_position`; 0: off). Several classes painted on that slice
            each get their own shift, measured on their own result, on their own boundary
            (the auto prior itself stays at the calibration).
        end_second_pass: with one organ outlined on one slice of this volume, and a first
            result lying all on one side of it (``tip_shift`` at its full size: mostly paint at
            the organ's end; a first result from near the middle that stops on one side takes
            it too, and lost there every time measured), segment again from that result's
            most confident slice, as for another volume's paint, and keep the second result
            when it still matches the outline on the painted slice (Dice >= 0.8; else the
            first result stays): a tip's prototypes miss the organ's body (a liver painted at
            its lower tip: BTCV 17 0.29 -> 0.77, CHAOS 31 0.39 -> 0.78;
            :mod:`napari_tpm.paint_position`). The labels keep the outline on its slice
            (with ``keep_paint``), though the second result is taken from pseudo-paint.
        track_ends: with paint on axial slices (the scan's first axis) of this volume (no
            background strokes) and no second pass,
            follow each narrow painted structure (largest painted section's equivalent radius
            up to 16 mm) past its result's ends slice by slice, each slice's prototype the
            structure's mean feature on the slice before (:mod:`napari_tpm.tracking`): a long
            structure (aorta, vena cava) keeps its look but not its surroundings, and the
            painted prototypes stop a few centimetres from the paint.
        scale_position: with the filter bank, let its body-relative position channels count
            less when every painted structure's section is large (an equivalent radius over
            48 mm, half the weight from 58 mm: a liver), whose sections elsewhere reach
            positions the painted one never had (a left lobe across the midline;
            :mod:`napari_tpm.position_weight`).
        second_choice: with ``connected`` and several classes on this volume (painted, or a
            second pass's pseudo-paint), a voxel whose best class is cut off from that class's
            paint takes its second-best class where that one scores above its boundary,
            before the components are kept: on T2 MR the spleen's prototypes outscore a
            kidney's own below a kidney painted at its pole, and those voxels were dropped
            (:func:`napari_tpm.postprocess.second_choice`).
        bootstrap: with paint on another volume, segment a second time from the first
            result's most confident slice of this volume, as if the user had painted it
            there: the prototypes and the boundary then come from this scan
            (:mod:`napari_tpm.bootstrap`).
        contrast_search: with paint on another volume and ``bootstrap``, try the painted
            organ's intensities at a few offsets (CT +-40 and +-80 HU; MR x0.5-1.5) and keep
            the result whose size, place in the body and second-pass agreement fit the paint
            best: scans taken at another contrast phase otherwise miss the organ
            (:mod:`napari_tpm.contrast`). Five runs instead of one.
        match_slices: with paint on another CT, compare a result's height with the painted
            slice matched into this scan by the two scans' slice profiles (body, bone, fat;
            :mod:`napari_tpm.slice_match`) instead of the same fraction of each scan, and let
            that height count for more (``matched_height`` of
            :class:`napari_tpm.footprint.FootprintWeights`):
            two fields of view seldom agree. MR keeps the fractions.
        fit_component: with ``connected`` and paint on another volume, keep the 3D region
            whose size, place in the body and height in the scan fit the paint best, instead
            of the largest region (often a look-alike neighbour: the other kidney).
        classes_apart: with several classes painted on another volume and ``bootstrap``, find
            each class by itself first (its own contrast search and region), then segment them
            jointly from their results on this scan: another patient's joint first pass lets
            one class's look-alikes take the others' place. Each class's results are then
            compared with its paint on their best-fitting slice, not their widest
            (:attr:`napari_tpm.footprint.Footprint.widest`).
    """

    connected: bool = True
    complete_paint: bool = True
    grow_scribbles: bool = True
    class_boundaries: str = "relax"
    refine: int = 2
    refine_atlas: int = 2
    refine_weight: float = 1.0
    slice_priors: bool = False
    prior_smoothing: float = 1.0
    recalibrate: bool = False
    slice_boundaries: bool = True
    refine_gate: bool = True
    smooth_mm: float = 0.0
    neck: float = 0.25
    hard_negatives: bool = False
    snap_mm: float = 3.0
    halfway_edge: bool = True
    exact_paint: bool = True
    stroke_regions: bool = True
    continuity: float = 0.7
    continuity_end: bool = True
    outrunning_parts: bool = True
    second_choice: bool = True
    fill_concave: bool = True
    pole_features: bool = True
    tip_shift: float = 1.0
    end_second_pass: bool = True
    track_ends: bool = True
    scale_position: bool = True
    bootstrap: bool = True
    contrast_search: bool = True
    match_slices: bool = True
    fit_component: bool = True
    classes_apart: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(field.default, bool) and not isinstance(value, bool):
                # a string such as "false" would silently count as True
                raise ValueError(f"{field.name} must be True or False, got {value!r}")
        for name in ("refine", "refine_atlas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in (
            "refine_weight",
            "prior_smoothing",
            "smooth_mm",
            "neck",
            "snap_mm",
            "tip_shift",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.class_boundaries not in CLASS_BOUNDARIES:
            raise ValueError(
                f"class_boundaries must be one of {CLASS_BOUNDARIES}, got {self.class_boundaries!r}"
            )
        if not isinstance(self.continuity, (int, float)) or not 0 <= self.continuity <= 1:
            raise ValueError(f"continuity must be a fraction in [0, 1], got {self.continuity!r}")

    @classmethod
    def from_pairs(
        cls, pairs: list[str], base: dict[str, Any] | None = None, flag: str = "--option"
    ) -> SegmentOptions:
        """From CLI ``KEY=VALUE`` strings over ``base`` values.

        A ValueError names the bad pair and starts with ``flag``, the command-line flag the
        pairs came from, so the user is told which flag to mend.
        """
        values = dict(base or {})
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{flag} takes KEY=VALUE, got {pair!r}")
            values[key.strip()] = value.strip()
        try:
            return cls.from_mapping(values)
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SegmentOptions:
        """Build from ``{name: value}``, converting strings (CLI ``key=value``) to field types."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(fields)}")
        typed: dict[str, Any] = {}
        for name, value in values.items():
            kind = type(getattr(cls(), name))
            if isinstance(value, str):
                if kind is bool:
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(f"option {name} takes true/false, got {value!r}")
                    value = value.lower() in ("1", "true", "yes", "on")
                else:
                    try:
                        value = kind(value)
                    except ValueError:
                        raise ValueError(
                            f"option {name} takes a {kind.__name__}, got {value!r}"
                        ) from None
            typed[name] = value
        return cls(**typed)
