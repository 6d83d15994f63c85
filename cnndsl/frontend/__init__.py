"""Text to IR: the syntax tree, the Lark parser, lowering, the formatter and the augment vocabulary."""
