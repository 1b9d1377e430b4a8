"""`python manage.py create_api_token USERNAME [--name NAME]`: a new API token for scripts; the key is
the last line printed."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from predictions.api.tokens import token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (the last line of the output)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="What the token is for.")

    def handle(self, *args: object, username: str, name: str, **options: object) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        token, key = token_create(user=user, name=name)
        self.stderr.write(f"Created the token {token.name!r} for {username}; its key is shown only now:")
        self.stdout.write(key)
