def scale(x):
    return 2.5 * x


def main():
    print(scale(4))
