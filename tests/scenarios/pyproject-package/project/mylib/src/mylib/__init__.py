def weighted_total(values):
    return sum(i * v for i, v in enumerate(values, start=1))


def main():
    print(weighted_total([0.5, 1.25, 2.0]))
