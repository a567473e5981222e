"""An independent re-statement of the reference GU2Net network code (gln + u2net), for parity tests only.

It keeps the reference's module names (so its state dict has the reference's keys), its task *indices* and its
(B, 1, W, H) layout, written from ``shared/docs/reference.md`` §1-3. Nothing in the package imports it.
"""

import torch
import torch.nn.functional as F
from torch import nn


class _Conv(nn.Module):
    def __init__(self, cin, cout, k, attr="conv", **kw):
        super().__init__()
        setattr(self, attr, nn.Conv2d(cin, cout, k, **kw))
        self.attr = attr

    def forward(self, x):
        return getattr(self, self.attr)(x)


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, mid=None, task_num=3):
        super().__init__()
        mid = mid or cout
        self.dwise1 = nn.ModuleList([_Conv(cin, cin, 3, "conv1", padding=1, groups=cin) for _ in range(task_num)])
        self.dwise2 = nn.ModuleList([_Conv(mid, mid, 3, "conv1", padding=1, groups=mid) for _ in range(task_num)])
        self.pwise1 = _Conv(cin, mid, 1, "conv1")
        self.pwise2 = _Conv(mid, cout, 1, "conv1")
        self.bn1 = nn.ModuleList([nn.BatchNorm2d(mid) for _ in range(task_num)])
        self.bn2 = nn.ModuleList([nn.BatchNorm2d(cout) for _ in range(task_num)])

    def forward(self, x, t):
        x = F.leaky_relu(self.bn1[t](self.pwise1(self.dwise1[t](x))))
        return F.leaky_relu(self.bn2[t](self.pwise2(self.dwise2[t](x))))


class Down(nn.Module):
    def __init__(self, cin, cout, task_num):
        super().__init__()
        self.maxpool = nn.MaxPool2d(2)
        self.conv = DoubleConv(cin, cout, task_num=task_num)

    def forward(self, x, t):
        return self.conv(self.maxpool(x), t)


class Up(nn.Module):
    def __init__(self, cin, cout, task_num):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(cin, cout, cin // 2, task_num)

    def forward(self, x1, x2, t):
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1), t)


class U2Net(nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        n = len(out_channels)
        for t, c in enumerate(out_channels):
            setattr(self, f"in{t}", _Conv(1, 64, 1))
            setattr(self, f"out{t}", _Conv(64, c, 1))
        self.conv = DoubleConv(64, 64, task_num=n)
        self.down1, self.down2 = Down(64, 128, n), Down(128, 256, n)
        self.down3, self.down4 = Down(256, 512, n), Down(512, 512, n)
        self.up1, self.up2 = Up(1024, 256, n), Up(512, 128, n)
        self.up3, self.up4 = Up(256, 64, n), Up(128, 64, n)

    def forward(self, x, t):
        x1 = self.conv(getattr(self, f"in{t}")(x), t)
        x2 = self.down1(x1, t)
        x3 = self.down2(x2, t)
        x4 = self.down3(x3, t)
        x5 = self.down4(x4, t)
        x = self.up1(x5, x4, t)
        x = self.up2(x, x3, t)
        x = self.up3(x, x2, t)
        x = self.up4(x, x1, t)
        return torch.sigmoid(getattr(self, f"out{t}")(x))


class DilatedConv(nn.Module):
    def __init__(self, c, d):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, dilation=d, padding=d)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class GlobalNet(nn.Module):
    def __init__(self, out_channels, dilations=(1, 2, 5, 2, 1)):
        super().__init__()
        for t in range(len(out_channels)):
            setattr(self, f"in{t}", _Conv(1, 64, 3, padding=1))
        for t, c in enumerate(out_channels):
            setattr(self, f"in_local{t}", _Conv(c, 64, 3, padding=1))
            setattr(self, f"out{t}", _Conv(128, c, 1))
            setattr(self, f"convs{t}", nn.Sequential(*[DilatedConv(128, d) for d in dilations]))

    def forward(self, x, local, t):
        size = x.shape[2:]
        x = F.interpolate(x, scale_factor=0.25)
        lf = F.interpolate(local, scale_factor=0.25)
        f = torch.cat([getattr(self, f"in{t}")(x), getattr(self, f"in_local{t}")(lf)], dim=1)
        y = getattr(self, f"out{t}")(getattr(self, f"convs{t}")(f))
        return torch.sigmoid(F.interpolate(y, size=size))


class ReferenceGLN(nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        self.localNet = U2Net(out_channels)
        self.globalNet = GlobalNet(out_channels)

    def forward(self, x, task_idx=0):
        local = self.localNet(x, task_idx)
        return {"output": self.globalNet(x, local, task_idx) * local}
