"""The one validated settings object: a YAML file plus SERVICEBOT_... environment overrides."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class PluginSpec(Strict):
    """A plugin chosen by name, with its own config (validated by the plugin's Config model)."""

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


def _spec(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class GuardsSettings(Strict):
    """Active guards, in the operator's order."""

    input: list[PluginSpec] = Field(
        default_factory=lambda: [PluginSpec(name="max_length"), PluginSpec(name="instruction_override")]
    )
    output: list[PluginSpec] = Field(default_factory=list)
    passages: list[PluginSpec] = Field(default_factory=list)
    timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("input", "output", "passages", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return [_spec(v) for v in value] if isinstance(value, list) else value


class KnowledgeSettings(Strict):
    """Where documents come from and how they are chunked and retrieved."""

    source: Path = Path("knowledge/demo/articles")
    collection: str = "kb"
    chunk_size: int = Field(default=900, ge=100)
    chunk_overlap: int = Field(default=120, ge=0)
    k: int = Field(default=3, ge=1, le=50)
    min_score: float = Field(default=0.25, ge=-1, le=1)
    # Index lifecycle (knowledge/): where vectors live, size limits, build checks, retention.
    store: Literal["embedded", "http"] = "embedded"
    chroma_host: str = "127.0.0.1"
    chroma_port: int = Field(default=8000, ge=1, le=65535)
    chroma_ssl: bool = False  # the http token comes only from the environment: SERVICEBOT_CHROMA_TOKEN
    max_file_mb: float = Field(default=20.0, gt=0)
    language: str = "en"  # for documents that do not declare one
    qa_file: Path | None = None  # question/answer pairs a new version must answer (recall@5) before switching
    recall_margin: float = Field(default=0.02, ge=0, le=1)
    retain_versions: int = Field(default=3, ge=1)
    max_segments: int = Field(default=8, ge=1)  # incremental builds add a segment; more than this compacts


class PolicySettings(Strict):
    """How verdicts combine: R = sum(weight * score); refuse when R - helpfulness_weight * H >= threshold."""

    weights: dict[str, float] = Field(default_factory=dict)
    refuse_threshold: float = Field(default=1.0, gt=0)
    helpfulness_weight: float = Field(default=0.0, ge=0)


class ServerSettings(Strict):
    """Where the web UI listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=7860, ge=1, le=65535)
    max_message_chars: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # larger API requests get 413
    rate_per_ip: float = Field(default=600, ge=0)  # turns per minute per client address (0 = no limit)
    rate_per_session: float = Field(default=30, ge=0)  # turns per minute per conversation or API user
    rate_burst: int = Field(default=10, ge=1)  # turns allowed at once after a quiet spell
    # Turns past the input guards (retrieving, generating) at once; the rest wait, so turns the guards block stay
    # fast under load. None = the responder's own figure (`hf`: max_batch; `openai`: max_concurrent; else 8);
    # 0 = no gate. Read at start.
    max_active_turns: int | None = Field(default=None, ge=0)
    reports_dir: Path = Path("artifacts")  # evaluation reports and plots shown in the ops console


class Settings(BaseSettings):
    """Everything servicebot is configured with; passed in, never global."""

    model_config = SettingsConfigDict(
        env_prefix="SERVICEBOT_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    data_dir: Path = Path("var")
    # Conversations, feedback, handoffs, audit: SQLite in data_dir when empty; a postgresql:// URL lets several
    # instances behind a load balancer share them (keep the password in PGPASSWORD or ~/.pgpass, not here).
    database_url: str = ""
    embedder: PluginSpec = PluginSpec(name="minilm")
    retriever: PluginSpec = PluginSpec(name="chroma")
    responder: PluginSpec = PluginSpec(name="hf")
    guards: GuardsSettings = GuardsSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    policy: PolicySettings = PolicySettings()
    server: ServerSettings = ServerSettings()

    @field_validator("embedder", "retriever", "responder", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return _spec(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values passed in code win (a test's or a benchmark's own data_dir must not be moved by an exported
        # SERVICEBOT_DATA_DIR), then the environment, then the operator's YAML file (`load_settings`).
        return init_settings, env_settings, _FileSource(settings_cls)

    @property
    def index_dir(self) -> Path:
        """Where the Chroma store lives."""
        return self.data_dir / "index"


_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("servicebot_file_values", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The YAML file's values, below the environment (set by `load_settings` while it builds the settings)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # `__call__` hands over the whole mapping

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


def describe_error(err: ValidationError, origin: str) -> str:
    """Turn a pydantic error into one sentence naming the offending key."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    else:
        problem = first["msg"][0].lower() + first["msg"][1:]
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{origin}: '{where}': {problem}{more}."


def load_settings(path: Path | None = None) -> Settings:
    """Load settings from a YAML file (the built-in defaults when None) plus environment overrides.

    Args:
        path: the operator's YAML file, or None for the packaged defaults.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds an unknown or invalid key.
    """
    path = path or Path(os.environ.get("SERVICEBOT_CONFIG", DEFAULT_CONFIG))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"Config file {path} is not valid YAML{line}.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings, not {type(raw).__name__}.")
    token = _FILE_VALUES.set(raw)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, f"Config error in {path}")) from None
    finally:
        _FILE_VALUES.reset(token)
