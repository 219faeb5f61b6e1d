"""The app's one model."""

from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=200, unique=True)
    body = models.TextField(blank=True)
    stars = models.IntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
