from django import template

from common.numbers import cells_words

register = template.Library()


@register.filter
def cells(count):
    """{{ batch.viable_cells|cells }} → 303 × 10⁶"""
    return cells_words(count)
