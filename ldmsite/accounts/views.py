from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth import get_user_model
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from gallery.media import serve_file
from ldmsite.accounts.forms import ProfileDetailsForm, ProfileForm, SignUpForm
from ldmsite.accounts.models import Profile


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to ldmsite, {user.username}.")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def profile(request):
    details = Profile.objects.filter(user=request.user).first() or Profile(user=request.user)
    form = ProfileForm(request.POST or None, instance=request.user)
    details_form = ProfileDetailsForm(request.POST or None, request.FILES or None, instance=details,
                                      prefix="profile")
    if request.method == "POST" and all([form.is_valid(), details_form.is_valid()]):
        form.save()
        details_form.save()
        messages.success(request, "Profile saved.")
        return redirect("accounts:profile")
    return render(request, "accounts/profile.html", {"form": form, "details_form": details_form,
                                                     "details": details})


@require_GET
def avatar(request, username):
    """A person's avatar, streamed like images are (gallery.media.serve_file); public like their page."""
    owner = get_object_or_404(get_user_model(), username=username, is_active=True)
    details = Profile.objects.filter(user=owner).first()
    if details is None or not details.avatar:
        raise Http404("No avatar")
    return serve_file(details.avatar)
