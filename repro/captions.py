"""Caption metrics for the image-captioning papers (Show, Attend and Tell; Scheduled Sampling).

The protocol, the one the COCO caption evaluation server used and the papers report:

* hypotheses are free-running decodes (the model fed its own words back, greedy or beam search), exactly one
  caption per image; references are every human caption of that image (five on COCO and Flickr);
* hypotheses and references both go through the Stanford PTB tokenizer (lowercased, split off punctuation),
  and punctuation tokens are then dropped;
* :func:`score_captions` scores them with pycocoevalcap 1.2, unchanged: BLEU-1..4 (corpus level, brevity
  penalty from the closest reference length), METEOR 1.5, ROUGE-L (F-measure with beta 1.2, mean over images)
  and CIDEr-D (n-grams 1..4, idf from the references of the scored set, Gaussian length penalty sigma 6, x10).
  SPICE only when asked for: it downloads Stanford CoreNLP models and wants 8 GB of Java heap.

Scores are on pycocoevalcap's scale: BLEU, METEOR, ROUGE-L and SPICE in [0, 1], CIDEr in [0, 10]. The papers
print them x100 (BLEU-4 24.3, CIDEr 89.5); convert when comparing with a published table.

The PTB tokenizer and METEOR run Java: without a Java runtime :func:`score_captions` raises
:class:`JavaMissingError`, which says how to install one.

:func:`bleu_proxy` is a Java-free BLEU-4 from torchmetrics for logging during training, under its own key
(``bleu4_proxy``). Its tokenization is cruder, so it is only a trend line: reported numbers always come from
:func:`score_captions` on free-running decodes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Hashable, Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from torchmetrics.functional.text import bleu_score

BLEU_PROXY_KEY = "bleu4_proxy"


class JavaMissingError(RuntimeError):
    """No working Java runtime: the PTB tokenizer and METEOR of pycocoevalcap cannot run."""

    def __init__(self, detail: str = "no `java` on PATH"):
        super().__init__(
            f"Java is required for the caption metrics ({detail}): pycocoevalcap's PTB tokenizer and METEOR "
            "run on a Java runtime, so Show, Attend and Tell and Scheduled Sampling cannot be scored without "
            "one. Install a JRE, e.g. `sudo apt-get install default-jre-headless` (Debian/Ubuntu), "
            "`brew install openjdk` (macOS) or `conda install -c conda-forge openjdk`, and make sure `java` "
            "is on PATH. `make venv` tries the apt-get install itself where it is allowed to."
        )


def java_problem() -> str | None:
    """Why Java cannot run, or None when ``java -version`` works."""
    java = shutil.which("java")
    if java is None:
        return "no `java` on PATH"
    # A `java` on PATH is not enough: macOS ships a stub that only says no runtime is installed.
    try:
        subprocess.run([java, "-version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`{java} -version` failed: {e}"
    return None


def java_available() -> bool:
    return java_problem() is None


def require_java() -> None:
    """Raise :class:`JavaMissingError` unless a Java runtime works."""
    problem = java_problem()
    if problem is not None:
        raise JavaMissingError(problem)


def score_captions(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    spice: bool = False,
    beam: int | None = None,
    meteor: bool = True,
) -> dict[str, float]:
    """COCO caption metrics of one hypothesis per image against that image's references.

    ``hypotheses`` maps an image id to its decoded caption, ``references`` the same ids to their human
    captions. Returns ``BLEU-1``..``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr`` (and ``SPICE`` when
    ``spice``), on pycocoevalcap's scale (see the module docstring). With ``beam`` every key names the beam
    size the hypotheses were decoded with, e.g. ``BLEU-4@beam3``, as the paper harness keys its metrics.
    ``meteor=False`` leaves METEOR out (smoke runs: its Java process takes seconds to start on every call).
    """
    check_captions(hypotheses, references)
    if beam is not None and (isinstance(beam, bool) or not isinstance(beam, int) or beam < 1):
        raise ValueError(f"beam must be a positive int, got {beam!r}")
    require_java()
    res, gts = tokenize(hypotheses, references)

    scores = {}
    # The scorers print progress and BLEU its corpus statistics ({'testlen': ...}): keep the caller's stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU-{n}": b for n, b in enumerate(bleu, start=1)})
        if meteor:
            scores["METEOR"] = meteor_score(gts, res)
        scores["ROUGE-L"], _ = Rouge().compute_score(gts, res)
        scores["CIDEr"], _ = Cider().compute_score(gts, res)
        if spice:
            # Imported here: only SPICE needs it, and it downloads Stanford CoreNLP on first use.
            from pycocoevalcap.spice.spice import Spice

            scores["SPICE"], _ = Spice().compute_score(gts, res)
    suffix = "" if beam is None else f"@beam{beam}"
    return {name + suffix: float(value) for name, value in scores.items()}


def check_captions(hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> None:
    """Raise ValueError naming the image ids at fault unless each image has one hypothesis and references."""

    def ids(bad) -> str:
        bad = sorted(map(repr, bad))
        return ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")

    if not hypotheses:
        raise ValueError("no hypotheses to score")
    if no_refs := [i for i in hypotheses if i not in references]:
        raise ValueError(f"hypotheses for images without references: {ids(no_refs)}")
    if no_hyp := [i for i in references if i not in hypotheses]:
        raise ValueError(f"references for images without a hypothesis: {ids(no_hyp)}")
    if not_one := [i for i, h in hypotheses.items() if not isinstance(h, str)]:
        raise ValueError(f"each image takes exactly one hypothesis string; not a string for: {ids(not_one)}")
    # A bare string would pass for a list of one-character references.
    if bare := [i for i, r in references.items() if isinstance(r, str)]:
        raise ValueError(f"references must be a list of strings per image; a bare string for: {ids(bare)}")
    if empty := [i for i, r in references.items() if len(r) == 0]:
        raise ValueError(f"images with an empty list of references: {ids(empty)}")
    if not_str := [i for i, r in references.items() if not all(isinstance(c, str) for c in r)]:
        raise ValueError(f"references that are not all strings for: {ids(not_str)}")


def tokenize(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """PTB-tokenize hypotheses and references in one Java call: ({id: [hyp]}, {id: [ref, ...]})."""
    captions = {("hyp", i): [{"caption": h}] for i, h in hypotheses.items()}
    captions.update({("ref", i): [{"caption": r} for r in refs] for i, refs in references.items()})
    # The tokenizer's Java process reports its speed on file descriptor 2 at every call; keep that quiet and
    # show it only when the tokenizer failed. (Any other thread writing to stderr meanwhile lands here too.)
    with tempfile.TemporaryFile() as log, stderr_to(log):
        tokens = PTBTokenizer().tokenize(captions)
    # It pairs output lines with ids by position, so a Java failure shows up as missing or short entries.
    if any(len(tokens.get(k, ())) != len(v) for k, v in captions.items()):
        log.seek(0)
        raise RuntimeError(f"the PTB tokenizer failed:\n{log.read().decode(errors='replace')}")
    hyp = {i: tokens[("hyp", i)] for i in hypotheses}
    ref = {i: tokens[("ref", i)] for i in hypotheses}
    return hyp, ref


@contextlib.contextmanager
def stderr_to(file):
    """Point file descriptor 2 at ``file``: a subprocess writes to the descriptor, not to ``sys.stderr``."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def meteor_score(gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]]) -> float:
    """Corpus METEOR of tokenized captions (from Meteor's pooled statistics, not a mean of image scores)."""
    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
    finally:
        close_meteor(meteor)
    return score


def close_meteor(meteor: Meteor) -> None:
    """Stop the Java process a pycocoevalcap ``Meteor`` starts, now rather than whenever it is collected."""
    process = meteor.meteor_p
    process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        with contextlib.suppress(OSError):
            pipe.close()
    # compute_score leaves its lock held when it raises, and Meteor.__del__ takes the lock: release it, or the
    # garbage collector would hang. The instance is ours alone, so the lock guards nothing else.
    if meteor.lock.locked():
        meteor.lock.release()


def bleu_proxy(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """Training-time BLEU-4 (torchmetrics, no Java) under the key ``bleu4_proxy``: never a reported number.

    Tokens are lowercased runs of letters, digits and apostrophes, close to but not the PTB tokenization, and
    the score is 0 as soon as one n-gram order has no match (no smoothing), where pycocoevalcap's is merely
    small.
    """
    check_captions(hypotheses, references)

    def words(caption: str) -> str:
        return " ".join(re.findall(r"[\w']+", caption.lower()))

    preds = [words(hypotheses[i]) for i in hypotheses]
    target = [[words(r) for r in references[i]] for i in hypotheses]
    return {BLEU_PROXY_KEY: float(bleu_score(preds, target, n_gram=4))}
