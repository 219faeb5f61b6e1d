"""A test case that writes and reads, run by Django's test runner in its
test database."""

from django.db import IntegrityError, connection, transaction
from django.test import TestCase, TransactionTestCase

from notes.models import Note


class NoteTests(TestCase):
    def test_write_and_read(self):
        Note.objects.create(title="first", body="hello", stars=3)
        Note.objects.bulk_create([Note(title=f"bulk {i}", stars=i) for i in range(10)])
        self.assertEqual(Note.objects.count(), 11)
        self.assertEqual(Note.objects.get(title="first").body, "hello")
        self.assertEqual(sum(Note.objects.values_list("stars", flat=True)), 3 + sum(range(10)))
        Note.objects.filter(stars__gte=5).update(body="many")
        self.assertEqual(Note.objects.filter(body="many").count(), 5)

    def test_a_failed_savepoint_keeps_the_test_transaction(self):
        Note.objects.create(title="unique")
        with self.assertRaises(IntegrityError):
            with transaction.atomic():
                Note.objects.create(title="unique")
        self.assertEqual(Note.objects.filter(title="unique").count(), 1)

    def test_runs_in_the_test_database(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            self.assertEqual(cursor.fetchone()[0], connection.settings_dict["NAME"])


class CommittedNoteTests(TransactionTestCase):
    def test_commits_are_seen_by_a_new_query(self):
        with transaction.atomic():
            Note.objects.create(title="committed", stars=7)
        self.assertEqual(Note.objects.get(title="committed").stars, 7)
