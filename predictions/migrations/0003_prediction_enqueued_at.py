from django.db import migrations, models


def queued_rows_were_sent_when_created(apps, schema_editor):
    """Rows queued before this field existed were handed to the broker as they were created (a send
    that failed then raised an error): count them as sent then, so that they are not all sent again."""
    Prediction = apps.get_model("predictions", "Prediction")
    Prediction.objects.filter(status="queued").update(enqueued_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0002_prediction_as_one_face"),
    ]

    operations = [
        migrations.AddField(
            model_name="prediction",
            name="enqueued_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(queued_rows_were_sent_when_created, migrations.RunPython.noop),
    ]
