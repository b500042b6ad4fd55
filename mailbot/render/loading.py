"""A template directory read and compiled: its partials and meta.yaml files read at
start, each template compiled when first used (from the bytecode cache), its static
checks (included files exist, every variable declared) when the checks run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import jinja2
from jinja2 import meta as jinja_meta

from mailbot.errors import TemplateError
from mailbot.render.catalogue import (
    HTML_FILE,
    META_FILE,
    PARTIALS_DIR,
    TEMPLATE_NAME,
    TEXT_FILE,
    TRANSLATIONS_DIR,
    TemplateMeta,
    parse_meta,
)
from mailbot.render.environments import Environments


@dataclass(frozen=True)
class Loaded:
    meta: TemplateMeta
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template
    files: Mapping[str, Path]  # "subject" / "text" / "html" -> file to blame in errors


class Loading(Environments):
    """The templates of the directory, by name: read at start, compiled on first use."""

    checks_run: bool
    _metas: dict[str, TemplateMeta]
    _templates: dict[str, Loaded]

    def names(self) -> list[str]:
        return sorted(self._metas)

    def meta(self, name: str) -> TemplateMeta:
        return self._get(name).meta

    def _load_partials(self) -> None:
        partials = self.template_dir / PARTIALS_DIR
        if not partials.is_dir():
            return
        for path in sorted(partials.iterdir()):
            if path.is_file() and path.name.endswith(".j2"):
                self._sources[f"{PARTIALS_DIR}/{path.name}"] = (self._read(path), path)

    def _load_metas(self) -> dict[str, TemplateMeta]:
        metas: dict[str, TemplateMeta] = {}
        for directory in sorted(self.template_dir.iterdir()):
            if not directory.is_dir() or directory.name.startswith((".", "_")):
                continue
            if directory.name == TRANSLATIONS_DIR:  # data (translations), not a template
                continue
            if not TEMPLATE_NAME.match(directory.name):
                raise TemplateError(
                    f"{directory}: template directory names use lower-case letters, digits "
                    "and hyphens (e.g. ar-general)"
                )
            for path in sorted(directory.iterdir()):
                expected = path.name in {META_FILE, TEXT_FILE, HTML_FILE}
                if not expected and path.name.endswith((".j2", ".yaml", ".yml")):
                    raise TemplateError(
                        f"{path}: unexpected file; a template directory holds "
                        f"{META_FILE}, {TEXT_FILE} and {HTML_FILE}"
                    )
            for part in (META_FILE, TEXT_FILE, HTML_FILE):
                if not (directory / part).is_file():
                    raise TemplateError(f"{directory / part}: missing (every template needs it)")
            meta_path = directory / META_FILE
            metas[directory.name] = parse_meta(meta_path, self._read(meta_path), directory.name)
            for part in (TEXT_FILE, HTML_FILE):
                path = directory / part
                self._sources[f"{directory.name}/{part}"] = (self._read(path), path)
        return metas

    def _compile(self, key: str, path: Path) -> jinja2.Template:
        env = self._env_for(key)
        try:
            template = env.get_template(key)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{path}: line {exc.lineno}: syntax error: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{path}: {exc.message or exc}") from None
        if not self.checks_run:
            return template
        # Static checks: included/extended templates exist.
        source = self._sources[key][0]
        for referenced in jinja_meta.find_referenced_templates(env.parse(source)):
            if referenced is not None and referenced not in self._sources:
                raise TemplateError(
                    f"{path}: includes {referenced!r}, which is not a template file "
                    f"(partials live in {self.template_dir / PARTIALS_DIR})"
                )
        return template

    def _check_undeclared(self, meta: TemplateMeta, key: str, path: Path, source: str) -> None:
        env = self._env_for(key)
        used = jinja_meta.find_undeclared_variables(env.parse(source))
        unknown = used - set(meta.required) - set(meta.optional) - set(env.globals)
        if meta.translated:
            unknown.discard("translation")  # provided by the renderer
        if unknown:
            raise TemplateError(
                f"{path}: uses undeclared variable(s) {', '.join(sorted(unknown))}; declare "
                f"them under variables in {path.parent / META_FILE}"
            )

    def _prepare(self, name: str, meta: TemplateMeta) -> Loaded:
        directory = self.template_dir / name
        meta_path = directory / META_FILE
        subject_key = f"{name}/{META_FILE}#subject"
        self._sources[subject_key] = (meta.subject, meta_path)
        files = {"subject": meta_path, "text": directory / TEXT_FILE, "html": directory / HTML_FILE}
        compiled: dict[str, jinja2.Template] = {}
        for part, key in (
            ("subject", subject_key),
            ("text", f"{name}/{TEXT_FILE}"),
            ("html", f"{name}/{HTML_FILE}"),
        ):
            try:
                compiled[part] = self._compile(key, files[part])
            except TemplateError as exc:
                if part == "subject":
                    raise TemplateError(f"{exc} (in the subject)") from None
                raise
            if self.checks_run:
                self._check_undeclared(meta, key, files[part], self._sources[key][0])
        return Loaded(
            meta,
            compiled["subject"],
            compiled["text"],
            compiled["html"],
            MappingProxyType(files),
        )

    def _get(self, name: str) -> Loaded:
        """A template, compiled on first use (two threads may both compile it: the same)."""
        loaded = self._templates.get(name)
        if loaded is not None:
            return loaded
        meta = self._metas.get(name)
        if meta is None:
            known = ", ".join(self.names()) or "none"
            raise TemplateError(f"unknown template {name!r} (known: {known})")
        loaded = self._templates[name] = self._prepare(name, meta)
        return loaded
