"""Everything a command needs for one data set, loaded lazily and once: data, item semantics, tag index."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ground.settings import Settings
from tools.data import Dataset, Splits, leave_one_out, load
from tools.embeddings import ItemSemantics, item_semantics
from tools.tag_index import TagIndex, chroma_client
from tools.text_encoders import text_encoder_for


@dataclass
class Workspace:
    """One data set (a name such as "ml-100k" or a folder of MovieLens files) under one settings object."""

    settings: Settings
    data: str
    progress: bool = True
    _client: object | None = field(default=None, init=False, repr=False)

    @cached_property
    def dataset(self) -> Dataset:
        return load(self.data, self.settings.data_dir)

    @cached_property
    def splits(self) -> Splits:
        return leave_one_out(
            self.dataset,
            seed=self.settings.seed,
            max_len=self.settings.max_seq_len,
            fewshot_fraction=self.settings.fewshot_fraction,
        )

    @cached_property
    def semantics(self) -> ItemSemantics:
        encoder = text_encoder_for(self.settings.embedding_spec(), timeout_s=self.settings.llm_timeout_s)
        return item_semantics(self.dataset, self.settings.item_dim, self.settings.embeddings_dir, self.progress,
                              encoder)  # fmt: skip

    @cached_property
    def index(self) -> TagIndex:
        """The tag index as built; raises IndexMissingError if `tandem index build` has not run."""
        index = TagIndex(chroma_client(self.settings.chroma_url, self.settings.chroma_dir), self.dataset.name)
        index.manifest(expected_key=self.semantics.key)
        return index

    def index_for_build(self) -> TagIndex:
        return TagIndex(chroma_client(self.settings.chroma_url, self.settings.chroma_dir), self.dataset.name)
