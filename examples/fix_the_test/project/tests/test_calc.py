from calc import add, double


def test_add():
    assert add(2, 2) == 4


def test_double():
    assert double(3) == 6
