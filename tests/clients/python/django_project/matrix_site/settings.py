"""Settings of the client matrix's Django project: one app, one database,
the one pgshare serves at PGHOST:PGPORT/PGDATABASE."""

import os

SECRET_KEY = "client-matrix"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["notes"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["PGDATABASE"],
        "USER": os.environ["PGUSER"],
        "HOST": os.environ["PGHOST"],
        "PORT": os.environ["PGPORT"],
        "TEST": {"NAME": os.environ.get("DJANGO_TEST_DATABASE")},
    }
}
