"""Saving, albums, publishing, explore and search, likes, metadata, files and retention."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from gallery import services
from gallery.models import Album, Image, Like, Report
from generation.admission import Refusal
from generation.diffusion import read_png_parameters


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_a_generated_png_carries_its_exact_parameters(people, make_image):
    image = make_image(people["owner"], prompt="a small green triangle at the top on a white background")
    with image.file.open("rb") as handle:
        fields = read_png_parameters(handle.read())
    assert fields["prompt"] == "a small green triangle at the top on a white background"
    assert (fields["seed"], fields["steps"], fields["sampler"]) == (image.seed, 25, "DDIM")
    assert (fields["width"], fields["height"]) == (64, 64)


def test_an_a1111_png_fills_the_generate_form(people, tmp_path, model):
    info = PngInfo()
    info.add_text("parameters", "a cat in a hat\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M, "
                                "Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model: sd15")
    path = tmp_path / "a1111.png"
    PILImage.new("RGB", (8, 8)).save(path, pnginfo=info)
    with open(path, "rb") as handle:
        response = signed_in(people["owner"]).post(reverse("generation:import_png"), {"file": handle})
    assert response.status_code == 200
    fields = response.json()["fields"]
    assert fields["prompt"] == "a cat in a hat" and fields["negative_prompt"] == "blurry"
    assert (fields["steps"], fields["guidance_scale"], fields["seed"]) == (30, 6.5, 1234)
    assert (fields["width"], fields["height"], fields["sampler"]) == (512, 768, "DPM++ 2M Karras")


def test_a_file_that_is_not_a_png_is_refused_by_name(people, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with open(path, "rb") as handle:
        response = signed_in(people["owner"]).post(reverse("generation:import_png"), {"file": handle})
    assert response.status_code == 400 and "file" in response.json()["errors"]


def test_deleting_an_image_deletes_its_files(people, make_image, django_capture_on_commit_callbacks):
    image = make_image(people["owner"])
    storage, names = image.file.storage, [image.file.name, image.thumbnail.name]
    assert all(storage.exists(name) for name in names)
    with django_capture_on_commit_callbacks(execute=True):
        image.delete()
    assert not any(storage.exists(name) for name in names)


def test_file_names_are_unguessable(people, make_image):
    first, second = make_image(people["owner"]), make_image(people["owner"])
    for image in (first, second):
        token = image.file.name.rsplit("/", 1)[1].split(".")[0]
        assert len(token) == 32 and int(token, 16) > 2**64, "128 random bits, not an id"
    assert first.file.name != second.file.name


def test_purge_removes_only_old_unsaved_private_images(people, make_image, django_capture_on_commit_callbacks):
    old_unsaved = make_image(people["owner"])
    old_saved = make_image(people["owner"], saved=True)
    new_unsaved = make_image(people["owner"])
    old_public = make_image(people["owner"], visibility="public")
    Image.objects.filter(pk__in=[old_unsaved.pk, old_saved.pk, old_public.pk]).update(
        created_at=timezone.now() - timedelta(days=31))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.purge_unsaved(30) == 1
    assert set(Image.objects.values_list("pk", flat=True)) == {old_saved.pk, new_unsaved.pk, old_public.pk}
    assert not old_unsaved.file.storage.exists(old_unsaved.file.name)


def test_likes_are_unique_per_person_and_counted(people, make_image):
    image = make_image(people["owner"], visibility="public")
    assert services.like_image(people["other"], image) is True
    assert services.like_image(people["other"], image) is False
    services.like_image(people["staff"], image)
    image.refresh_from_db()
    assert image.like_count == 2 and Like.objects.filter(image=image).count() == 2
    services.unlike_image(people["other"], image)
    image.refresh_from_db()
    assert image.like_count == 1


def test_search_finds_public_images_by_prompt_words(people, make_image):
    circle = make_image(people["owner"], prompt="a large red circle on a blue background", visibility="public")
    make_image(people["owner"], prompt="a small red square", visibility="public")
    make_image(people["owner"], prompt="a red circle kept private")
    make_image(people["owner"], prompt="a red circle hidden", visibility="public", hidden=True)
    images, _ = services.explore(query="RED circle")
    assert images == [circle]
    page = Client().get(reverse("gallery:explore"), {"q": "circle"}).content.decode()
    assert "a large red circle on a blue background" in page and "kept private" not in page


def test_explore_pages_with_cursors_newest_and_most_liked(people, make_image):
    images = [make_image(people["owner"], visibility="public") for _ in range(5)]
    services.like_image(people["other"], images[1])
    services.like_image(people["staff"], images[1])
    services.like_image(people["other"], images[3])
    first, cursor = services.explore("newest", limit=2)
    second, cursor2 = services.explore("newest", cursor=cursor, limit=2)
    third, cursor3 = services.explore("newest", cursor=cursor2, limit=2)
    assert [i.pk for i in first + second + third] == [i.pk for i in reversed(images)]
    assert cursor3 is None
    liked, cursor = services.explore("most_liked", limit=2)
    assert [i.pk for i in liked] == [images[1].pk, images[3].pk]
    rest, _ = services.explore("most_liked", cursor=cursor, limit=10)
    assert [i.pk for i in rest] == [images[4].pk, images[2].pk, images[0].pk]


def test_a_broken_cursor_starts_from_the_beginning_instead_of_failing(people, make_image):
    make_image(people["owner"], visibility="public")
    assert Client().get(reverse("gallery:explore"), {"cursor": "%%%garbage"}).status_code == 200
    images, _ = services.explore(cursor="bm90IGpzb24")
    assert len(images) == 1
    for nonsense in (["not a date", 5], ["2026-01-01T00:00:00", 10**30], [10**30, "2026-01-01T00:00:00", 1]):
        order = "most_liked" if len(nonsense) == 3 else "newest"
        images, _ = services.explore(order, cursor=services.encode_cursor(nonsense))
        assert len(images) == 1


def test_albums_add_reorder_cover_and_remove(people, make_image):
    owner = people["owner"]
    a, b, c = (make_image(owner) for _ in range(3))
    album = services.create_album(owner, "Circles")
    assert services.add_to_album(album, [a, b, c, a]) == 3
    album.refresh_from_db()
    assert album.cover == a, "the first image becomes the cover"
    assert all(Image.objects.get(pk=i.pk).saved for i in (a, b, c)), "filed images are kept"
    services.move_in_album(album, c.pk, -1)
    assert list(album.items.values_list("image_id", flat=True)) == [a.pk, c.pk, b.pk]
    services.update_album(album, title="Round things", cover=b)
    services.remove_from_album(album, [b.pk])
    album.refresh_from_db()
    assert album.title == "Round things" and album.cover == a
    other_album = services.create_album(owner, "Also")
    services.add_to_album(other_album, [a])
    assert set(a.albums.values_list("title", flat=True)) == {"Round things", "Also"}


def test_publishing_an_album_shares_it_and_its_images_on_the_profile(people, make_image):
    owner = people["owner"]
    a, b = make_image(owner), make_image(owner)
    album = services.create_album(owner, "Shapes")
    services.add_to_album(album, [a, b])
    anonymous = Client()
    assert anonymous.get(album.get_absolute_url()).status_code == 404
    services.publish_album(album, "public")
    assert anonymous.get(album.get_absolute_url()).status_code == 200
    profile = anonymous.get(reverse("gallery:profile", args=[owner.username])).content.decode()
    assert "Shapes" in profile and a.thumbnail_url() in profile
    assert anonymous.get(a.file_url()).status_code == 200


def test_unlisted_images_are_reachable_by_link_but_not_listed(people, make_image):
    image = make_image(people["owner"], visibility="unlisted", prompt="an unlisted purple square")
    anonymous = Client()
    assert anonymous.get(image.get_absolute_url()).status_code == 200
    assert "unlisted purple square" not in anonymous.get(reverse("gallery:explore")).content.decode()
    profile = anonymous.get(reverse("gallery:profile", args=[people["owner"].username])).content.decode()
    assert "unlisted purple square" not in profile


def test_one_open_report_per_person_per_image(people, make_image):
    image = make_image(people["owner"], visibility="public")
    client = signed_in(people["other"])
    client.post(reverse("gallery:report", args=[image.pk]), {"reason": "spam", "text": "ads"})
    client.post(reverse("gallery:report", args=[image.pk]), {"reason": "spam"})
    assert Report.objects.filter(image=image, reporter=people["other"]).count() == 1
    with pytest.raises(Refusal) as error:
        services.report_image(people["other"], image, "spam")
    assert error.value.status == 409
    with pytest.raises(Refusal):
        services.report_image(people["staff"], image, "not-a-reason")


def count_queries(client, url):
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return len(context.captured_queries)


@pytest.mark.parametrize("page", ["explore", "history", "album", "profile"])
def test_page_query_counts_do_not_grow_with_the_number_of_images(people, make_image, page):
    owner = people["owner"]
    album = services.create_album(owner, "Big", visibility="public")
    client = signed_in(owner)

    def url():
        return {"explore": reverse("gallery:explore"), "history": reverse("gallery:history"),
                "album": album.get_absolute_url(), "profile": reverse("gallery:profile", args=[owner.username]),
                }[page]

    services.add_to_album(album, [make_image(owner, visibility="public") for _ in range(2)])
    few = count_queries(client, url())
    services.add_to_album(album, [make_image(owner, visibility="public") for _ in range(10)])
    many = count_queries(client, url())
    assert many == few, f"{page}: {few} queries with 2 images, {many} with 12"
