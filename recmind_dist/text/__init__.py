"""Node texts (item descriptions, user profiles) for the language-model towers."""

from recmind_dist.specs import TextSpec, template_fields
from recmind_dist.text.templates import build_item_texts, build_user_texts, render_template

__all__ = ["TextSpec", "build_item_texts", "build_user_texts", "render_template",
           "template_fields"]
