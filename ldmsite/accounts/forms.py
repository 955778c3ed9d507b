from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from ldmsite.accounts.avatars import checked_avatar
from ldmsite.accounts.models import Profile

User = get_user_model()


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="For password resets; never shown to others.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email address already exists.")
        return email


class ProfileForm(forms.ModelForm):
    email = forms.EmailField(required=True)

    class Meta:
        model = User
        fields = ("first_name", "email")
        labels = {"first_name": "Display name"}

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("An account with this email address already exists.")
        return email


class ProfileDetailsForm(forms.ModelForm):
    """The bio and avatar (ldmsite.accounts.models.Profile), saved with ProfileForm on the same page."""

    avatar = forms.FileField(required=False, label="Avatar",
                             help_text="PNG, JPEG, WebP or GIF, at most 2 MB; cropped to a square, shown as 256×256.",
                             widget=forms.FileInput(attrs={"accept": "image/png,image/jpeg,image/webp,image/gif"}))
    remove_avatar = forms.BooleanField(required=False, label="Remove my avatar")
    bio = forms.CharField(required=False, max_length=300, widget=forms.Textarea(attrs={"rows": 3}),
                          help_text="A line or two about you, shown on your public page (300 characters).")

    class Meta:
        model = Profile
        fields = ("bio", "avatar")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.previous_avatar = self.instance.avatar.name if self.instance.avatar else ""
        if not self.instance.avatar:
            del self.fields["remove_avatar"]

    def clean_avatar(self):
        upload = self.cleaned_data.get("avatar")
        if not upload or not hasattr(upload, "content_type"):  # nothing new uploaded: keep what is there
            return self.instance.avatar
        return checked_avatar(upload)

    def save(self, commit=True):
        previous = self.previous_avatar
        if self.cleaned_data.get("remove_avatar") and not hasattr(self.cleaned_data.get("avatar"), "content_type"):
            self.instance.avatar = ""
        profile = super().save(commit=commit)
        if commit and previous and previous != profile.avatar.name:
            profile.avatar.storage.delete(previous)  # the old file goes with its replacement
        return profile
