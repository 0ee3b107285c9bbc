"""A long talk's segments are handed the portrait (and mask) versions the talk validated; their
tracks are the segment's own cuts, so the talk's audio versions are not theirs."""

from __future__ import annotations

from s2v.model.jobs import InputObject, Job, Status
from s2v.model.longform import new_segment, plan_records
from s2v.model.segments import Segment


def test_a_segment_is_handed_the_validated_versions_of_its_talks_images_only() -> None:
    image, mask = InputObject("inputs/t/a.png", "e1", 10), InputObject("inputs/t/a.mask.png", "e3", 30)
    talk = Job(job_id="p" * 32, status=Status.RENDERING, version=3, folder="t", stem="a", image=image,
               audio=InputObject("inputs/t/a.wav", "e2", 20), extra_inputs={"mask": mask}, created_at=1.0,
               updated_at=1.0, params={"model": "infinitetalk", "resolution": "480p", "seed": 7},
               segments=plan_records([Segment(0, 0, 300, "pause"), Segment(1, 300, 400, "end")]), segment_count=2,
               input_versions={"image": "v-image", "mask": "v-mask", "audio": "v-talk"})
    cut = InputObject("work/p/audio-0001.flac", "x", 5)

    segment = new_segment(talk, talk.segments[1], {"audio": cut}, 2.0, price_per_second=0.03, due_in=0)

    assert segment.input_versions == {"image": "v-image", "mask": "v-mask"}
    assert segment.inputs == {"image": image, "audio": cut, "mask": mask}
