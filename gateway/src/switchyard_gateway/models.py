"""One model name everywhere: clients use the public name (or any backend's own name for the
same model) and the gateway sends the active backend's name."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GatewayError
from .settings import Settings


@dataclass(frozen=True)
class ModelRoute:
    public: str
    upstream: str


class ModelCatalog:
    def __init__(self, settings: Settings) -> None:
        chat = ModelRoute(settings.model, settings.backend_model)
        self._chat = {name: chat for name in (settings.model, settings.backend_model, *settings.model_aliases)}
        self._embedding = self._single(settings.embedding_model)
        self._reranker = self._single(settings.reranker_model)
        self.public_names = tuple(
            dict.fromkeys(name for name in (settings.model, settings.embedding_model, settings.reranker_model) if name)
        )

    @staticmethod
    def _single(name: str) -> dict[str, ModelRoute]:
        return {name: ModelRoute(name, name)} if name else {}

    def _resolve(self, routes: dict[str, ModelRoute], requested: object, default: str) -> ModelRoute:
        name = requested if isinstance(requested, str) and requested else default
        route = routes.get(name)
        if route is None:
            available = ", ".join(sorted({route.public for route in routes.values()})) or "none"
            raise GatewayError(
                404,
                f"The model '{name}' does not exist. Available models: {available}.",
                "model_not_found",
                param="model",
            )
        return route

    def find(self, name: str) -> ModelRoute:
        """The model of any kind that `name` names; 404 when none does."""
        every = {**self._reranker, **self._embedding, **self._chat}
        return self._resolve(every, name, name)

    def chat(self, requested: object) -> ModelRoute:
        return self._resolve(self._chat, requested, next(iter(self._chat)))

    def embedding(self, requested: object) -> ModelRoute:
        return self._resolve(self._embedding, requested, next(iter(self._embedding), ""))

    def reranker(self, requested: object) -> ModelRoute:
        return self._resolve(self._reranker, requested, next(iter(self._reranker), ""))
