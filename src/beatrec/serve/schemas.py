"""Request and response models of the ``beatrec serve`` API (pydantic; they make the OpenAPI page at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_LIST = 1024  # hard bound on any list in a request (the config's max_pairs / max_items bound them further)


class Health(BaseModel):
    status: str = Field(description="ok, or degraded (answered with 503) when explanations cannot be served")
    reason: str | None = Field(None, description="why the service is degraded")
    run: str | None = Field(description="the run directory (only with the API key when the server has one)")
    dataset: str
    lm: str
    finetune: str
    model_version: str
    users: int
    items: int
    new_users: int
    tokens_per_entity: int
    uptime_s: float
    batching: str = Field(description="continuous (requests join the running decode between steps) or window "
                                      "(with the reason continuous batching is off)")
    auth: bool = Field(description="whether /v1 routes need the X-API-Key header")
    queue: int = Field(description="pairs waiting for generation")


class Token(BaseModel):
    slot: str = Field(description="macro, micro_1 .. micro_N")
    code: int
    token: str = Field(description="the token as the LM sees it, e.g. <user_macro_12>")
    terms: list[str] = Field(description="top terms of the code in the vocabulary report (its meaning)")
    carriers: int = Field(description="users or items carrying this code")
    source: str = Field(description="own: carriers' own texts; interacted: what they interacted with; none")


DECODING = Field("beam", description="beam: the run's decoding (beam search by default); greedy: one beam, "
                 "about 3x faster, slightly different sentences")


class RecommendRequest(Strict):
    user: int
    k: int = Field(10, ge=1)
    explain: bool = False
    decoding: Literal["beam", "greedy"] = DECODING


class RecommendedItem(BaseModel):
    item: int
    title: str
    score: float = Field(description="q_u · q_i over the quantised behavior vectors")
    explanation: str | None = None
    cached: bool | None = None


class RecommendResponse(BaseModel):
    user: int
    items: list[RecommendedItem]
    model_version: str


class Pair(Strict):
    user: int
    item: int


class ExplainRequest(Strict):
    pairs: list[Pair] = Field(min_length=1, max_length=MAX_LIST)
    decoding: Literal["beam", "greedy"] = DECODING


class Explained(BaseModel):
    user: int
    item: int
    title: str
    explanation: str
    user_tokens: list[int]
    item_tokens: list[int]
    cached: bool


class ExplainResponse(BaseModel):
    explanations: list[Explained]
    model_version: str


class NewUserRequest(Strict):
    items: list[int] = Field(min_length=1, max_length=MAX_LIST, description="items the new user interacted with")


class NewUserResponse(BaseModel):
    user: int = Field(description="id valid until the server restarts")
    items: list[int]
    tokens: list[Token]
    provenance: dict = Field(description="fold-in details, as `beatrec tokens --out` writes them")


class Entity(BaseModel):
    side: str
    id: int
    title: str | None = None
    new: bool = False
    interactions: int
    tokens: list[Token]
    profile: str | None = None


class ItemHit(BaseModel):
    item: int
    title: str
    interactions: int


class ItemSearch(BaseModel):
    items: list[ItemHit]


class UserList(BaseModel):
    users: list[int]


class Attention(BaseModel):
    uid: int
    iid: int
    explanation: str
    words: list[str]
    token_labels: list[str]
    slot_share: list[list[float]] = Field(description="(words, slots) attention share of each word on each slot")
    text_share: list[float]
    user_share: float
    item_share: float
