"""Node texts (item descriptions, user profiles) for the language-model towers."""

from recmind_dist.text.templates import (
    TextSpec,
    build_item_texts,
    build_user_texts,
    render_template,
    template_fields,
)

__all__ = ["TextSpec", "build_item_texts", "build_user_texts", "render_template",
           "template_fields"]
