"""The expert's review of annotation proposals: the review file and its store, the policies that
decide with no expert, the sheets and the offline review page, the app's review routes and their
input checks, the exchange with annotation tools (COCO, Label Studio), and applying decisions.
Proposals themselves are made in `vqi.augment`."""
