"""WSGI entry point: `wharf djangoproject.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")

application = get_wsgi_application()
