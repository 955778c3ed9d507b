"""The generate page's mode switch as a form: every mode's fields without the script, and only the
chosen mode's fields count when it is posted."""

import re

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from gallery.models import Image
from generation.diffusion.request import HR_UPSCALERS
from generation.models import Generation
from tests.api.conftest import make_image
from tests.generation.test_image_to_image_jobs import png


def page_form(**overrides):
    fields = {"model": "tiny", "prompt": "a red circle", "width": "32", "height": "32", "steps": "4",
              "guidance_scale": "5", "sampler": "Euler", "num_images": "1"}
    fields.update(overrides)
    return fields


def test_the_page_without_its_script_offers_every_mode_and_posts_files(client, tiny_model, alice):
    client.force_login(alice)
    page = client.get(reverse("generation:generate")).content.decode()
    assert 'enctype="multipart/form-data"' in page
    modes = re.findall(r'<input type="radio" name="mode" value="(\w+)"', page)
    assert modes == ["txt2img", "img2img", "inpaint", "outpaint"]
    assert re.search(r'value="txt2img"[^>]*\s+checked', page), "text to image is the mode a page opens in"
    for name in ("init_image", "mask"):
        assert re.search(rf'<input type="file" name="{name}"', page), name
    for name in ("denoising_strength", "resize_mode", "mask_blur", "inpainting_fill", "inpaint_full_res",
                 "inpaint_full_res_padding", "inpainting_mask_invert", "outpaint_left", "outpaint_right",
                 "outpaint_top", "outpaint_bottom", "enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
                 "hr_denoising_strength", "hr_prompt", "hr_negative_prompt"):
        assert f'name="{name}"' in page, name
    for upscaler in HR_UPSCALERS:
        assert f'<option value="{upscaler}"' in page, upscaler


def test_values_left_in_another_modes_fields_do_not_refuse_the_job(client, tiny_model, alice):
    client.force_login(alice)
    response = client.post(reverse("generation:generate"), page_form(
        mode="img2img", denoising_strength="0.6", outpaint_left="64", enable_hr="on", hr_scale="9",
        mask_blur="999", init_image=SimpleUploadedFile("in.png", png(), content_type="image/png")))
    job = Generation.objects.get()
    assert response.status_code == 302, response.content.decode()[:2000]
    assert job.mode == "img2img" and job.params["denoising_strength"] == 0.6
    assert job.params["outpaint_left"] == 0 and job.params["enable_hr"] is False and job.params["mask_blur"] == 4


def test_the_hires_fix_is_posted_with_text_to_image_when_switched_on(client, tiny_model, alice):
    client.force_login(alice)
    client.post(reverse("generation:generate"), page_form(mode="txt2img", hr_scale="2", hr_upscaler="Lanczos"))
    client.post(reverse("generation:generate"), page_form(mode="txt2img", enable_hr="on", hr_scale="2",
                                                          hr_upscaler="Lanczos", hr_second_pass_steps="2"))
    plain, hires = Generation.objects.order_by("pk")
    assert plain.params["enable_hr"] is False
    assert hires.params["enable_hr"] is True and hires.params["hr_upscaler"] == "Lanczos"
    assert hires.params["hr_second_pass_steps"] == 2


def test_use_as_input_opens_the_generate_page_in_image_mode_with_that_image(client, tiny_model, alice):
    image = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    client.force_login(alice)
    image_page = client.get(image.get_absolute_url()).content.decode()
    link = f'{reverse("generation:generate")}?source_image={image.pk}'
    assert f'href="{link}">Use as input</a>' in image_page
    page = client.get(link).content.decode()
    assert re.search(r'value="img2img"[^>]*\s+checked', page)
    assert f'name="source_image" id="id_source_image" value="{image.pk}"' in page
    assert f'id="source-preview" alt="The source image" src="{image.file_url()}"' in page
