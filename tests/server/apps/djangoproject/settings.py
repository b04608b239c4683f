"""Settings of the minimal Django project served by wharf in test_frameworks.py.

No database and no installed apps: the project exercises Django's request/response
machinery (middleware, CSRF, uploads, streaming, error handling), not its ORM.
"""

SECRET_KEY = "wharf-test-suite-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

ROOT_URLCONF = "djangoproject.urls"
WSGI_APPLICATION = "djangoproject.wsgi.application"

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict = {}
TEMPLATES: list = []

USE_TZ = True
APPEND_SLASH = True

# Django only logs request errors to the console with DEBUG on; send them to stderr (which
# wharf writes to its log) so an exception in a view leaves a traceback behind.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}},
}
