"""A LoRA's page shows "Made with this LoRA": shared images whose parameters record its hash, plus
your own, newest first and bounded."""

from django.test import Client

from gallery import services
from tests.gallery.test_lora_restore import made_with_lora, style  # noqa: F401  (fixture)


def shown(user, lora) -> list[int]:
    client = Client()
    if user is not None:
        client.force_login(user)
    return [image.pk for image in client.get(lora.get_absolute_url()).context["samples"]]


def test_a_loras_page_shows_the_shared_images_made_with_it_and_your_own_newest_first(people, model, style,
                                                                                      make_image, settings):
    olive, oscar = people["owner"], people["other"]
    first = made_with_lora(oscar, model, [("olive/style", 1.0)])
    oscars_private = made_with_lora(oscar, model, [("olive/style", 1.0)], visibility="private")
    hidden = made_with_lora(oscar, model, [("olive/style", 1.0)])
    hidden.hidden = True
    hidden.save()
    olives_private = made_with_lora(olive, model, [("style", 0.5)], visibility="private")
    latest = made_with_lora(olive, model, [("style", 1.0)])
    make_image(oscar, visibility="public")  # no LoRA
    assert shown(olive, style) == [latest.pk, olives_private.pk, first.pk]
    assert shown(oscar, style) == [latest.pk, hidden.pk, oscars_private.pk, first.pk]  # his own, hidden too
    assert shown(None, style) == [latest.pk, first.pk]
    page = Client().get(style.get_absolute_url()).content.decode()
    assert "Made with this LoRA" in page and f'data-image="{latest.pk}"' in page
    assert len(services.images_made_with(style, olive, limit=2)) == 2
