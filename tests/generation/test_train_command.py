"""`manage.py train_ldm` runs the Django-free training code."""

from django.core.management import call_command
from transformers import CLIPTokenizer


def test_the_train_command_runs_a_stage_and_saves_a_loadable_tokenizer(tmp_path):
    call_command("train_ldm", "--preset", "tiny", "--stages", "tokenizer", "--work-dir", str(tmp_path))
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    ids = tokenizer("a large red circle")["input_ids"]
    words = ids[1:-1]  # between the start and end tokens
    assert len(words) == 4 and tokenizer.unk_token_id not in words, "every caption word is in the vocabulary"
