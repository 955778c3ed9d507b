"""The prompt blocklist: what it matches, every submission path refusing with a clear 4xx and
nothing queued, flagging, pattern validation, and matching that a hostile input cannot slow down."""

import json
import time
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from generation.admission import MAX_CHECKED_LENGTH, Refusal, check_prompt
from gallery.models import Album
from gallery.moderation_models import AuditEntry, BlocklistEntry, FlaggedPrompt
from generation.models import Generation
from ldmsite.accounts.tokens import create_token

BLOCKED_PROMPT = "a castle made of Forbidden cheese"


def block(pattern, **fields) -> BlocklistEntry:
    entry = BlocklistEntry(pattern=pattern, **fields)
    entry.full_clean()
    entry.save()
    return entry


def refusal(user, prompt, negative=""):
    with pytest.raises(Refusal) as error:
        check_prompt(user, prompt, negative)
    return error.value


# --- What matches ----------------------------------------------------------------------------------

def test_terms_match_whole_words_case_insensitively_by_default(people):
    block("forbidden")
    user = people["other"]
    assert "“Forbidden”" in refusal(user, BLOCKED_PROMPT).errors["prompt"]
    assert refusal(user, "FORBIDDEN!").status == 400
    check_prompt(user, "the unforbiddenness of cheese")  # not a whole word: allowed
    check_prompt(user, "a forbiddance")


def test_a_term_can_match_inside_words_and_phrases_match_across_spacing(people):
    block("cheese", whole_word=False)
    block("red  dragon")
    refusal(people["other"], "cheeseburger")
    refusal(people["other"], "a RED \n  dragon flying")
    check_prompt(people["other"], "a reddragon")


def test_full_width_letters_do_not_slip_past_a_term(people):
    block("forbidden")
    refusal(people["other"], "ｆｏｒｂｉｄｄｅｎ fruit")


# Issue 24, weakness 8: invisible characters, look-alike letters of other scripts and accents.
DISGUISED = {
    "zero-width space": "for\u200bbidden",
    "zero-width joiner": "forb\u200didden",
    "zero-width non-joiner": "forbi\u200cdden",
    "word joiner": "forbid\u2060den",
    "soft hyphen": "forbid\u00adden",
    "byte order mark": "\ufeffforbidden",
    "bidirectional override": "\u202eforbidden\u202c",
    "Cyrillic o": "f\u043erbidden",
    "Cyrillic e and i": "forb\u0456dd\u0435n",
    "Greek omicron and capital iota": "FΟRBΙDDEN",
    "Cyrillic capitals": "FОRBІDDЕN",
    "combining acute": "fo\u0301rbidden",
    "combining accents everywhere": "".join(c + "\u0300\u0327" for c in "forbidden"),
    "precomposed accents": "förbíddèn",
    "mathematical letters": "\U0001d41f\U0001d428\U0001d42b\U0001d41b\U0001d422\U0001d41d\U0001d41d\U0001d41e\U0001d427",
    "everything at once": "f\u200b\u043e\u0301r\u00adb\u0456dd\u0435n",
}


@pytest.mark.parametrize("disguise", DISGUISED)
def test_a_disguised_term_is_still_refused_in_the_prompt_and_the_negative_prompt(people, disguise):
    block("forbidden", check_negative_prompt=True)
    text = f"a castle made of {DISGUISED[disguise]} cheese"
    assert "prompt" in refusal(people["other"], text).errors
    assert "negative_prompt" in refusal(people["other"], "a calm lake", text).errors


@pytest.mark.parametrize("disguise", ["Cyrillic o", "combining acute", "zero-width space"])
def test_a_disguised_entry_matches_the_plain_word_and_a_regex_sees_the_same_text(people, disguise):
    """Entries are normalised the same way as prompts, terms and regular expressions alike."""
    block(DISGUISED[disguise])
    refusal(people["other"], "a forbidden fruit")
    BlocklistEntry.objects.all().delete()
    block(r"f[o0]rb[i1]dd?en", kind="regex")
    refusal(people["other"], f"a {DISGUISED[disguise]} fruit")


def test_normalising_leaves_ordinary_text_of_any_script_alone_where_it_can(people):
    from generation.blocklist import normalize
    assert normalize("  A   red\tcircle \n") == "A red circle"
    assert normalize("Ⅻ ｆｕｌｌ ﬁsh") == "XII full fish"
    assert normalize("café naïve") == "cafe naive"
    assert normalize("日本語") == "日本語" and normalize("한국어") == "한국어"
    block("forbidden")
    check_prompt(people["other"], "a forbiddance of the unforbidden")  # whole words only, as before
    check_prompt(people["other"], "форма")  # Cyrillic words that are not look-alikes pass


def test_regular_expressions_match_with_whole_word_by_default(people):
    block(r"gr[a4]ph(ic|1c)", kind="regex")
    refusal(people["other"], "very GR4PH1C scene")
    check_prompt(people["other"], "graphical user interface")


def test_negative_prompts_are_only_checked_when_the_entry_says_so(people):
    block("gore")
    check_prompt(people["other"], "a calm lake", "gore, blood")  # naming what to avoid is fine
    block("slur", check_negative_prompt=True)
    assert "negative prompt" in refusal(people["other"], "a calm lake", "slur").errors["negative_prompt"]


def test_disabled_entries_do_not_refuse(people):
    block("forbidden", enabled=False)
    check_prompt(people["other"], BLOCKED_PROMPT)


def test_reject_and_flag_records_the_attempt_for_the_staff_queue(people, staff_client):
    entry = block("forbidden", action="flag")
    refusal(people["other"], BLOCKED_PROMPT, "blurry")
    flagged = FlaggedPrompt.objects.get()
    assert (flagged.user, flagged.prompt, flagged.negative_prompt, flagged.entry, flagged.matched) == (
        people["other"], BLOCKED_PROMPT, "blurry", entry, "Forbidden")
    queue = staff_client.get(reverse("moderation:queue") + "?tab=flagged")
    assert BLOCKED_PROMPT in queue.content.decode() and queue.context["counts"]["flagged"] == 1
    staff_client.post(reverse("moderation:dismiss_flagged", args=[flagged.pk]))
    flagged.refresh_from_db()
    assert flagged.status == "dismissed" and flagged.resolved_by == people["staff"]
    assert AuditEntry.objects.filter(action=AuditEntry.Action.DISMISS_FLAGGED).exists()


def test_a_plain_reject_flags_nobody(people):
    block("forbidden")
    refusal(people["other"], BLOCKED_PROMPT)
    assert not FlaggedPrompt.objects.exists()


# --- Every submission path -------------------------------------------------------------------------

@pytest.fixture
def blocked(db):
    return block("forbidden", action="flag")


def test_the_web_form_refuses_a_blocked_prompt_with_a_message_and_queues_nothing(people, model, blocked,
                                                                                  other_client):
    data = {"model": model.slug, "prompt": BLOCKED_PROMPT, "negative_prompt": "", "width": "64", "height": "64",
            "steps": "3", "guidance_scale": "5", "sampler": "Euler", "seed": "", "num_images": "1", "eta": "0"}
    response = other_client.post(reverse("generation:generate"), data)
    assert response.status_code == 400
    assert "not allowed on this site" in response.content.decode()
    script = other_client.post(reverse("generation:generate"), data, HTTP_ACCEPT="application/json")
    assert script.status_code == 400 and "not allowed" in script.json()["errors"]["prompt"]
    assert not Generation.objects.exists()
    assert FlaggedPrompt.objects.filter(user=people["other"]).count() == 2


def test_an_album_title_or_description_with_a_blocked_term_is_refused_by_field(people, blocked):
    _, raw = create_token(people["other"], "script", ["read", "write"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    titled = api.post("/api/v1/albums/", json.dumps({"title": "My f\u043erbidden shapes"}),
                      content_type="application/json")
    assert titled.status_code == 400 and "not allowed on this site" in titled.json()["errors"]["title"]
    described = api.post("/api/v1/albums/", json.dumps({"title": "Shapes", "description": "all FORBIDDEN"}),
                         content_type="application/json")
    assert described.status_code == 400 and "description" in described.json()["errors"]
    assert not Album.objects.exists()
    album = api.post("/api/v1/albums/", json.dumps({"title": "Shapes"}), content_type="application/json")
    assert album.status_code == 201, album.content
    renamed = api.patch(f"/api/v1/albums/{album.json()['id']}/", json.dumps({"title": "forbidden"}),
                        content_type="application/json")
    assert renamed.status_code == 400 and Album.objects.get().title == "Shapes"


def test_the_rest_api_refuses_a_blocked_prompt_with_a_400_and_queues_nothing(people, model, blocked):
    _, raw = create_token(people["other"], "script", ["read", "generate"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = api.post("/api/v1/generations/", json.dumps({"prompt": BLOCKED_PROMPT, "steps": 3}),
                        content_type="application/json")
    assert response.status_code == 400, response.content
    assert "not allowed on this site" in json.dumps(response.json())
    assert not Generation.objects.exists()


def test_the_a1111_api_refuses_a_blocked_prompt_with_a_4xx_and_queues_nothing(people, model, blocked):
    _, raw = create_token(people["other"], "a1111", ["read", "generate"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = api.post("/sdapi/v1/txt2img", json.dumps({"prompt": BLOCKED_PROMPT, "steps": 3}),
                        content_type="application/json")
    assert 400 <= response.status_code < 500, response.content
    assert "not allowed on this site" in json.dumps(response.json())
    assert not Generation.objects.exists()


def test_the_generate_command_refuses_a_blocked_prompt_before_loading_a_model(blocked, tmp_path, monkeypatch):
    import generation.diffusion as diffusion

    monkeypatch.setattr(diffusion, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(CommandError, match="not allowed on this site"):
        call_command("generate", BLOCKED_PROMPT, out=str(tmp_path), stdout=StringIO(), stderr=StringIO())
    assert not list(tmp_path.glob("*.png"))
    assert FlaggedPrompt.objects.get().user is None, "flagged as coming from the command line"


# --- Patterns are validated when saved ------------------------------------------------------------------

@pytest.mark.parametrize("pattern, message", [
    ("(unclosed", "Not a valid regular expression"),
    ("(a+)+$", "Nested quantifiers"),
    (r"(\w+\s?)*end", "Nested quantifiers"),
    (r"(a)\1", "Backreferences"),
    ("(a|aa)+$", "takes too long"),
    ("x*", "matches empty text"),
])
def test_a_bad_or_slow_regular_expression_is_refused_with_a_message(db, pattern, message):
    with pytest.raises(ValidationError) as error:
        block(pattern, kind="regex")
    assert message in " ".join(error.value.message_dict["pattern"])
    assert not BlocklistEntry.objects.exists()


def test_the_blocklist_page_refuses_a_bad_pattern_and_keeps_what_was_typed(people, staff_client):
    response = staff_client.post(reverse("moderation:blocklist"), {
        "pattern": "(unclosed", "kind": "regex", "whole_word": "on", "action": "reject", "enabled": "on"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Not a valid regular expression" in html and 'value="(unclosed"' in html
    assert not BlocklistEntry.objects.exists() and not AuditEntry.objects.exists()


def test_staff_add_change_and_remove_entries_on_the_blocklist_page_and_each_is_logged(people, staff_client):
    page = reverse("moderation:blocklist")
    staff_client.post(page, {"pattern": "forbidden", "kind": "term", "whole_word": "on", "action": "flag",
                             "enabled": "on", "note": "test"})
    entry = BlocklistEntry.objects.get()
    assert (entry.action, entry.whole_word, entry.created_by) == ("flag", True, people["staff"])
    assert "forbidden" in staff_client.get(page).content.decode()
    staff_client.post(reverse("moderation:blocklist_entry", args=[entry.pk]), {
        "pattern": "forbidden", "kind": "term", "action": "reject", "enabled": "on"})
    entry.refresh_from_db()
    assert (entry.action, entry.whole_word) == ("reject", False)
    staff_client.post(reverse("moderation:blocklist_delete", args=[entry.pk]))
    assert not BlocklistEntry.objects.exists()
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "blocklist.add", "blocklist.change", "blocklist.delete"]


# --- Hostile input cannot make matching slow ---------------------------------------------------------------

def test_a_pathological_pattern_and_prompt_are_refused_quickly_not_matched_for_ever(people, caplog):
    # As if the pattern had slipped past validation: (a|aa)+$ backtracks exponentially on a...a!
    BlocklistEntry.objects.create(pattern="(a|aa)+$", kind="regex", whole_word=False)
    BlocklistEntry.objects.create(pattern="dragon", kind="term")
    started = time.monotonic()
    error = refusal(people["other"], "a" * 990 + "!")
    assert time.monotonic() - started < 2.0
    assert "could not be checked in time" in error.errors["prompt"]
    assert "timed out" in caplog.text
    check_prompt(people["other"], "a friendly cat")  # ordinary prompts are unaffected


def test_prompts_beyond_the_checked_length_are_refused_outright(people):
    error = refusal(people["other"], "x" * (MAX_CHECKED_LENGTH + 1))
    assert "at most" in error.errors["prompt"]


def test_a_suspended_persons_submission_is_refused_whatever_the_prompt(people):
    people["other"].is_active = False
    error = refusal(people["other"], "a friendly cat")
    assert error.status == 403
