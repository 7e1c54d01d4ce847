"""How node texts are written from the dataset's columns (:class:`TextSpec`)."""

from __future__ import annotations

import string

from pydantic import Field, field_validator

from recmind_dist.specs.base import Spec


class TextSpec(Spec):
    """How node texts are written. Defaults fit MovieLens (ml-100k / ml-1m) canonical columns."""

    item_template: str = Field(
        "{title} ({year}). Genres: {genres}.",
        description="Format string over item columns; missing clauses are dropped.",
    )
    user_template: str = Field(
        "A {age}-year-old {gender} {occupation}.",
        description="Format string over user (demographic) columns.",
    )
    user_genres_template: str = Field(
        "Top genres: {genres}.",
        description="Sentence listing the user's most frequent genres over TRAIN items; "
        "'{genres}' is filled with a ', '-joined list.",
    )
    user_titles_template: str = Field(
        "Liked: {titles}.",
        description="Sentence listing a few of the user's TRAIN items; '{titles}' is filled "
        "with a '; '-joined list.",
    )
    max_history_titles: int = Field(
        5, ge=0, description="Titles per user profile (bounds the profile's length, see "
        "docs/benchmarks.md § Why the defaults are what they are)."
    )
    top_genres: int = Field(3, ge=0, description="Genres per user profile.")
    title_column: str = Field("title", description="Item column used for history titles.")
    genres_column: str = Field("genres", description="Item column with separated genres.")
    genre_separator: str = Field(",", description="Separator inside the genres column.")

    @field_validator("item_template", "user_template", "user_genres_template",
                     "user_titles_template")
    @classmethod
    def _valid_format(cls, v: str) -> str:
        try:
            template_fields(v)
        except ValueError as e:  # malformed braces
            raise ValueError(f"not a valid format string: {e}") from e
        return v


def template_fields(template: str) -> list[str]:
    """Field names used by a format string, in order (``"{a} {b:d}"`` -> ``["a", "b"]``)."""
    out = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if name == "" or name.isdigit():
                raise ValueError("positional fields ('{}' / '{0}') are not supported")
            out.append(name)
    return out


