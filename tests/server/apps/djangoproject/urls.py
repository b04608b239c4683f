from django.urls import path

from djangoproject import views

urlpatterns = [
    path("search/", views.search, name="search"),
    path("form/", views.form, name="form"),
    path("upload/", views.upload, name="upload"),
    path("api/json/", views.json_api, name="json_api"),
    path("stream/", views.stream, name="stream"),
    path("login/", views.login, name="login"),
    path("whoami/", views.whoami, name="whoami"),
    path("boom/", views.boom, name="boom"),
]
