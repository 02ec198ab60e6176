from transformers import CLIPTokenizer

from patchkit.testbed import world
from patchkit.testbed.tokenizer import build_vocab, write_tokenizer_files


def test_every_world_word_is_one_token(tmp_path):
    write_tokenizer_files(world.vocabulary_words(), tmp_path, 16)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path))
    for word in world.vocabulary_words():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{word!r} splits into {tokenizer.convert_ids_to_tokens(ids)}"


def test_multi_token_concept_and_padding(tmp_path):
    write_tokenizer_files(world.vocabulary_words(), tmp_path, 16)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path))
    ids = tokenizer("a photo of john doe", padding="max_length", max_length=16).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:7] == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "john</w>", "doe</w>", "<|endoftext|>"]
    # As in SD 1.x, padding is the end-of-text token.
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert set(ids[7:]) == {tokenizer.eos_token_id}


def test_unknown_words_still_tokenize_by_characters(tmp_path):
    write_tokenizer_files(world.vocabulary_words(), tmp_path, 16)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path))
    tokens = tokenizer.tokenize("zebra")
    assert "".join(tokens).replace("</w>", "") == "zebra"


def test_merge_order_does_not_split_words_sharing_pairs():
    # "ring" and "triangle" share the pair r-i; a naive merge order splits "triangle".
    vocab, merges = build_vocab(["ring", "triangle", "string"])
    assert {"ring</w>", "triangle</w>", "string</w>"} <= set(vocab)
    assert len(merges) == len(set(merges))
