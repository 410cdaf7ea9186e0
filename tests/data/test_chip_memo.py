"""align_images keeps its last set in memory, keyed by the images' content: never stale."""

import shutil

from aird.data.chips import align_images


def test_repeated_alignment_is_served_from_memory_but_never_stale(tmp_path, lfw_sample):
    paths = [shutil.copy(p, tmp_path / p.name) for p in lfw_sample[:2]]
    first = align_images(paths, progress=False, workers=1)
    assert align_images(paths, progress=False, workers=1) is first  # no second read of thousands of chips
    # The same file with other content (an edited photo) is aligned again, not served from memory.
    shutil.copy(lfw_sample[3], paths[1])
    again = align_images(paths, progress=False, workers=1)
    assert again is not first and again.digests[1] != first.digests[1]
    assert (again.chips[0] == first.chips[0]).all() and (again.chips[1] != first.chips[1]).any()
