"""/api/v1/ images, albums, likes, reports and explore: the gallery services through the API."""

import pytest

from gallery.models import Album, Image, Report
from tests.api.conftest import client_for, make_image

Visibility = Image.Visibility


def test_my_image_list_filters_by_visibility_saved_prompt_and_job(alice, bob):
    red = make_image(alice, prompt="a red circle", saved=True)
    make_image(alice, prompt="a blue square", visibility=Visibility.PUBLIC, saved=True)
    make_image(alice, prompt="a red square")
    make_image(bob, prompt="a red circle")
    client = client_for(alice)

    def ids(query=""):
        response = client.get(f"/api/v1/images/{query}")
        assert response.status_code == 200, response.content
        return [image["id"] for image in response.json()["results"]]

    assert len(ids()) == 3
    assert len(ids("?visibility=public")) == 1
    assert len(ids("?saved=true")) == 2
    assert ids("?q=red circle") == [red.pk]
    assert client.get("/api/v1/images/?saved=maybe").status_code == 400
    assert client.get("/api/v1/images/?visibility=secret").status_code == 400
    assert client.get("/api/v1/images/?generation=x").status_code == 400


def test_sharing_an_image_keeps_it_and_unknown_fields_are_refused(alice):
    image = make_image(alice)
    client = client_for(alice)
    response = client.patch(f"/api/v1/images/{image.pk}/", {"visibility": "public"}, format="json")
    assert response.status_code == 200
    assert response.json()["visibility"] == "public" and response.json()["saved"] is True
    refused = client.patch(f"/api/v1/images/{image.pk}/", {"visibility": "public", "hidden": False}, format="json")
    assert refused.status_code == 400 and "hidden" in refused.json()["errors"]
    wrong = client.patch(f"/api/v1/images/{image.pk}/", {"saved": "perhaps"}, format="json")
    assert wrong.status_code == 400 and "saved" in wrong.json()["errors"]
    assert client.patch(f"/api/v1/images/{image.pk}/", {"visibility": "everyone"},
                        format="json").json()["errors"].keys() == {"visibility"}


def test_deleting_an_image_removes_it(alice):
    image = make_image(alice)
    client = client_for(alice)
    assert client.delete(f"/api/v1/images/{image.pk}/").status_code == 204
    assert not Image.objects.filter(pk=image.pk).exists()
    assert client.get(f"/api/v1/images/{image.pk}/").status_code == 404


def test_an_album_is_made_filled_ordered_shared_and_emptied(alice, bob):
    first, second = make_image(alice), make_image(alice)
    someone_elses = make_image(bob, visibility=Visibility.PUBLIC)
    client = client_for(alice)
    album = client.post("/api/v1/albums/", {"title": "Circles"}, format="json")
    assert album.status_code == 201 and album["Location"].endswith(album.json()["url"])
    url = album.json()["url"]
    added = client.post(f"{url}images/", {"images": [first.pk, second.pk]}, format="json")
    assert added.status_code == 200 and added.json()["added"] == 2
    refused = client.post(f"{url}images/", {"images": [someone_elses.pk]}, format="json")
    assert refused.status_code == 400 and "images" in refused.json()["errors"]
    assert client.post(f"{url}order/", {"images": [second.pk, first.pk]}, format="json").status_code == 200
    assert [image["id"] for image in client.get(url).json()["images"]] == [second.pk, first.pk]

    shared = client.patch(url, {"visibility": "public", "cover": second.pk}, format="json")
    assert shared.status_code == 200 and shared.json()["cover"] == second.pk
    assert Image.objects.get(pk=first.pk).visibility == "public", "sharing an album shares its images"
    assert [image["id"] for image in client_for(bob).get(url).json()["images"]] == [second.pk, first.pk]
    assert client.patch(url, {"cover": someone_elses.pk}, format="json").status_code == 400
    assert client.patch(url, {"title": ""}, format="json").status_code == 400

    assert client.delete(f"{url}images/{first.pk}/").status_code == 204
    assert client.delete(f"{url}images/{first.pk}/").status_code == 404
    assert client.delete(url).status_code == 204
    assert not Album.objects.exists() and Image.objects.filter(pk=first.pk).exists()


def test_liking_twice_counts_once_and_unliking_takes_it_back(alice, bob):
    image = make_image(alice, visibility=Visibility.PUBLIC, saved=True)
    client = client_for(bob)
    assert client.post(f"/api/v1/images/{image.pk}/like/").json() == {"liked": True, "like_count": 1}
    assert client.post(f"/api/v1/images/{image.pk}/like/").json() == {"liked": True, "like_count": 1}
    assert [i["id"] for i in client.get("/api/v1/likes/").json()["results"]] == [image.pk]
    assert client.get(f"/api/v1/images/{image.pk}/").json()["liked"] is True
    assert client.delete(f"/api/v1/images/{image.pk}/like/").json() == {"liked": False, "like_count": 0}


def test_a_report_reaches_staff_once_per_person(alice, bob):
    image = make_image(alice, visibility=Visibility.PUBLIC, saved=True)
    client = client_for(bob)
    report = client.post(f"/api/v1/images/{image.pk}/report/", {"reason": "spam", "text": "ads"}, format="json")
    assert report.status_code == 201 and report.json()["status"] == "open"
    again = client.post(f"/api/v1/images/{image.pk}/report/", {"reason": "spam"}, format="json")
    assert again.status_code == 409
    assert client.post(f"/api/v1/images/{image.pk}/report/", {"reason": "boring"}, format="json").status_code == 400
    assert [r["id"] for r in client.get("/api/v1/reports/").json()["results"]] == [report.json()["id"]]
    assert Report.objects.filter(reporter=bob).count() == 1


def test_explore_pages_through_public_images_only_and_searches(alice, bob):
    public = [make_image(alice, prompt=f"a red circle {n}", visibility=Visibility.PUBLIC, saved=True)
              for n in range(5)]
    make_image(alice, prompt="a red circle private")
    make_image(bob, prompt="a red circle hidden", visibility=Visibility.PUBLIC, hidden=True)
    client = client_for(bob)
    seen, url = [], "/api/v1/explore/?limit=2"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.content
        seen += [image["id"] for image in page.json()["results"]]
        url = page.json()["next"]
    assert seen == [image.pk for image in reversed(public)]
    found = client.get("/api/v1/explore/?q=circle 3").json()["results"]
    assert [image["id"] for image in found] == [public[3].pk]
    assert client.get("/api/v1/explore/?order=random").status_code == 400
    assert client.get("/api/v1/explore/?limit=0").status_code == 400


@pytest.mark.parametrize("cursor", ["WyJ4IiwgImFiYyJd", "WzEsICIyMDIwLTEzLTQ1VDAwOjAwOjAwIiwgMV0", "!!!"])
def test_a_forged_explore_cursor_is_a_400_or_the_first_page_never_a_crash(alice, cursor):
    make_image(alice, visibility=Visibility.PUBLIC, saved=True)
    for order in ("newest", "most_liked"):
        response = client_for(alice).get(f"/api/v1/explore/?order={order}&cursor={cursor}")
        assert response.status_code in (200, 400)
