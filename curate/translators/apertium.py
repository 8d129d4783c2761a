"""Apertium, Debian's offline rule-based MT."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from functools import cached_property
from pathlib import Path
from typing import Any

from curate.config import ApertiumTranslatorConfig
from curate.translators.base import TranslatorConfigError, translate_each
from schemas import base_lang, normalize_lang

# (source, target) → mode, for the pairs Debian packages (apertium-eng-spa, -eng-cat, -en-gl, -eo-en,
# -hbs-eng; its Serbo-Croatian leaves many English words in, which language ID then rejects).
APERTIUM_MODES: dict[tuple[str, str], str] = {
    ("en", "es"): "eng-spa",
    ("en", "ca"): "eng-cat",
    ("en", "gl"): "en-gl",
    ("en", "eo"): "en-eo",
    ("en", "hr"): "eng-hbs_HR",
    ("en", "sr"): "eng-hbs_SR",
    ("en", "bs"): "eng-hbs_BS",
    ("es", "en"): "spa-eng",
    ("ca", "en"): "cat-eng",
    ("gl", "en"): "gl-en",
    ("eo", "en"): "eo-en",
}
_SEPARATOR = "\n\n⟦⟦⟦{}⟧⟧⟧\n\n"
_SEPARATOR_RE = re.compile(r"\n\n⟦⟦⟦(\d+)⟧⟧⟧\n\n")
# Apertium leaves the blanks around a word it drops ("How do I" → "Como  desfago"); indentation stays.
_INNER_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
# Where the ``apertium`` script looks for modes unless APERTIUM_DATADIR says otherwise, and the data files
# a mode file runs (quoted absolute paths).
_DATADIR_DEFAULT = re.compile(r'APERTIUM_DATADIR="\$\{APERTIUM_DATADIR:-([^}"]+)\}"')
_QUOTED_PATH = re.compile(r"'(/[^']+)'")


class ApertiumTranslator:
    """Debian's rule-based MT, one ``apertium -u MODE`` process per batch.

    The texts of a batch are joined by numbered separator paragraphs. Apertium copies them unchanged and
    treats the blank lines around them as sentence ends, so no word moves across a separator and every
    text translates exactly as it would alone. If the separators do not come back in order, each text is
    translated in its own process.
    """

    translates = True

    def __init__(self, config: ApertiumTranslatorConfig) -> None:
        self.binary = config.binary
        self.modes = {normalize_lang(lang): mode for lang, mode in config.modes.items()}
        self.name = "apertium" + "".join(f":{lang}={mode}" for lang, mode in sorted(self.modes.items()))
        self._identities: dict[str, dict[str, Any]] = {}

    @cached_property
    def _executable(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            msg = (
                f"translate.apertium.binary {self.binary!r} not found: install Apertium and the pairs you "
                "need, e.g. `apt-get install apertium apertium-eng-spa`"
            )
            raise TranslatorConfigError(msg)
        return path

    @cached_property
    def installed_modes(self) -> frozenset[str]:
        listing = subprocess.run([self._executable, "-l"], capture_output=True, text=True, check=True)
        return frozenset(listing.stdout.split())

    def setup(self) -> None:
        missing = sorted(set(self.modes.values()) - self.installed_modes)
        if missing:
            msg = (
                f"translate.apertium.modes names {missing}, which are not installed "
                f"(installed: {sorted(self.installed_modes)}); `apt-get install apertium-<pair>` adds them"
            )
            raise TranslatorConfigError(msg)

    def mode(self, src: str, tgt: str) -> str:
        mode = self.modes.get(tgt) or APERTIUM_MODES.get((base_lang(src), base_lang(tgt)))
        if mode is None:
            msg = (
                f"no default Apertium mode for {src}→{tgt} (defaults: "
                f"{', '.join(f'{s}→{t}: {m}' for (s, t), m in APERTIUM_MODES.items())}); "
                f"set translate.apertium.modes.{tgt}"
            )
            raise TranslatorConfigError(msg)
        if mode not in self.installed_modes:
            msg = (
                f"Apertium mode {mode!r} for {src}→{tgt} is not installed "
                f"(installed: {sorted(self.installed_modes)}): `apt-get install apertium-{mode}`"
            )
            raise TranslatorConfigError(msg)
        return mode

    def check_pair(self, src: str, tgt: str) -> None:
        self.mode(src, tgt)

    @cached_property
    def _executable_sha256(self) -> str:
        return hashlib.sha256(Path(self._executable).read_bytes()).hexdigest()

    def _pair_data(self, mode: str) -> dict[str, Any] | None:
        """The mode file's text and the name and size of each data file it runs (what a pair package
        upgrade changes), or None where the mode file is not in the data folder the script names."""
        script = Path(self._executable).read_text(encoding="utf-8", errors="replace")
        default = _DATADIR_DEFAULT.search(script)
        datadir = os.environ.get("APERTIUM_DATADIR") or (default.group(1) if default else None)
        mode_file = Path(datadir, "modes", f"{mode}.mode") if datadir else None
        if mode_file is None or not mode_file.is_file():
            return None
        text = mode_file.read_text(encoding="utf-8")
        files = sorted(Path(quoted) for quoted in _QUOTED_PATH.findall(text))
        return {
            "mode_file": text,
            "files": [[f.name, f.stat().st_size if f.is_file() else None] for f in files],
        }

    def cache_identity(self, src: str, tgt: str) -> dict[str, Any]:
        """The mode in force for the pair (an explicit ``modes`` entry equal to the default keeps the
        cache), the bytes of the ``apertium`` executable, the pair's language data (its mode file, and
        the names and sizes of the files that runs) and the blank clean-up applied to the output."""
        mode = self.mode(src, tgt)
        if mode not in self._identities:
            self._identities[mode] = {
                "backend": "apertium",
                "mode": mode,
                "executable_sha256": self._executable_sha256,
                "pair_data": self._pair_data(mode),
                "cleanup": _INNER_SPACES.pattern,
            }
        return self._identities[mode]

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        mode = self.mode(src, tgt)
        if len(texts) > 1:
            joined = "".join(text + _SEPARATOR.format(i) for i, text in enumerate(texts))
            try:
                output = self._run(mode, joined)
            except RuntimeError:
                output = ""
            parts = _SEPARATOR_RE.split(output)
            if parts[1::2] == [str(i) for i in range(len(texts))] and not parts[-1].strip():
                return [_INNER_SPACES.sub(" ", part) for part in parts[0:-1:2]]
        return translate_each(lambda text: _INNER_SPACES.sub(" ", self._run(mode, text)), texts)

    def _run(self, mode: str, text: str) -> str:
        done = subprocess.run(
            [self._executable, "-u", mode], input=text, capture_output=True, text=True, encoding="utf-8"
        )
        if done.returncode != 0:
            msg = f"apertium {mode} exited with {done.returncode}: {done.stderr.strip()[-300:]}"
            raise RuntimeError(msg)
        return done.stdout
