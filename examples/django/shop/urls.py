from django.contrib.auth import views as auth_views
from django.urls import path

from shop import views

urlpatterns = [
    path("", views.index),
    path("products/<str:product_id>", views.product),
    path("categories/<str:category_id>", views.category),
    path("looks/<str:product_id>", views.look),
    path("shelf", views.shelf),
    path(
        "login",
        auth_views.LoginView.as_view(
            template_name="login.html",
            extra_context={"framework": "Django", "title": "Sign in", "user_id": None},
        ),
    ),
    path("logout", auth_views.LogoutView.as_view()),
]
