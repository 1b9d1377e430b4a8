from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import pluralize


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files; each is checked on its own by the view."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: object, initial: object = None) -> list[UploadedFile]:
        files = data if isinstance(data, list | tuple) else [data]
        files = [file for file in files if file]
        if not files:
            raise forms.ValidationError("Choose at least one photo.", code="required")
        limit = settings.AGEGENDER_MAX_FILES_PER_UPLOAD
        if len(files) > limit:
            raise forms.ValidationError(
                f"At most {limit} photo{pluralize(limit)} at a time: you chose {len(files)}. "
                f"Send them in batches of {limit} or fewer.",
                code="too_many",
            )
        return files


class UploadForm(forms.Form):
    images = MultipleFileField(label="Photos", required=True)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        accept = ",".join(f".{ext}" for ext in settings.AGEGENDER_ALLOWED_EXTENSIONS)
        self.fields["images"].widget.attrs.update({"accept": accept, "multiple": True})


class AccountDeleteForm(forms.Form):
    """Deleting an account asks for its password, so that a borrowed signed-in browser cannot."""

    password = forms.CharField(label="Your password", widget=forms.PasswordInput, strip=False)

    def __init__(self, user: object, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.", code="wrong_password")
        return password
